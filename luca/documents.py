"""Safe text extraction from uploaded documents: PDF, DOCX, XLSX, CSV, plain text and Markdown.

Every input is treated as hostile: the size limit is checked before any parsing, ZIP containers are
inspected for bombs before any XML is read, DOCX and XLSX XML is streamed (never built as a tree),
one work budget covers the whole document (XML elements read; PDF operators over all pages, forms
included), library warnings are silenced, and every library failure ends as a DocumentError.
Everything happens in memory; nothing touches the file system.

Besides the joined text (what is stored), the result holds the text's blocks, each with an anchor
saying where it came from, for citations: {"page": 3} (PDF); {"heading": "Costs", "paragraph": 12}
(DOCX: the nearest heading above and the block's position in the body; table rows add "row");
{"sheet": "Income", "cells": "A14:D14"} (XLSX, a row); {"row": 7} (CSV); {"lines": "3-5"} (text).

This module imports nothing of Luca: the sandbox (luca/sandbox.py) runs it as a script in a child
process with memory and CPU limits, where it reads one request on standard input (see serve_child).
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import math
import os
import posixpath
import re
import resource
import sys
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from lxml import etree
from pypdf import PdfReader, apply_configuration
from pypdf.errors import LimitReachedError
from pypdf.generic import StreamObject

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
Anchor = dict[str, Any]

MAX_ZIP_MEMBERS = 10_000
RATIO_CHECK_MIN_BYTES = 1024 * 1024  # small members may compress extremely well without being bombs
SNIFF_CHARS = 64 * 1024
CSV_DELIMITERS = ",;\t|"
PDF_EOF_WINDOW = 1024
PDF_MAX_TOKENS_PER_STREAM = 500_000  # pypdf allows 2 million, about 5 s of CPU for one page
PDF_MAX_FORM_DEPTH = 10  # forms drawn by forms: deeper ones are not counted (pypdf caps form invocations)
MAX_ANCHOR_CHARS = 100  # a heading or sheet name in an anchor (each block repeats it)
MAX_BLOCKS = 20_000  # as many as a sheet's rows; later pieces join the last block (what the sandbox returns is bounded)
EXIT_OUT_OF_MEMORY = 3  # the sandbox child's exit status when it ran out of memory

REASONS = {
    "too_large": "The file is too large.",
    "empty": "The file contains no text.",
    "unsupported": "This file type is not supported; upload a PDF, Word, Excel, CSV or text file.",
    "corrupt": "The file is damaged or incomplete and cannot be read.",
    "encrypted": "The file is password-protected; upload an unprotected copy.",
    "zip_bomb": "The file expands to an unreasonable size and was refused.",
    "too_many_pages": "The document has too many pages.",
    "too_complex": "The file is too complex to read.",
    "out_of_memory": "The file needs too much memory to read.",
    "timeout": "The file takes too long to read.",
    "crashed": "The file could not be read: the document reader stopped unexpectedly.",
}
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_BINARY_CHARS = re.compile("[\x00-\x08\x0e-\x1f\x7f]")
_MARKDOWN = re.compile(
    r"^(?:#{1,6}[ \t]+\S|[ \t]*[-*][ \t]+\S|[ \t]*```)"  # headings, lists, code fences
    r"|\[[^\]\n]+\]\([^)\s]+\)"  # [text](url)
    r"|\*\*[^*\n]+\*\*",  # **bold**
    re.MULTILINE,
)
_MARKDOWN_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*\|", re.MULTILINE)


@dataclass(frozen=True)
class Limits:
    """Bounds on the work done for one file."""

    max_bytes: int = 10 * 1024 * 1024
    max_pages: int = 200
    max_uncompressed_bytes: int = 50 * 1024 * 1024
    max_compression_ratio: int = 100
    max_chars: int = 200_000
    max_rows: int = 20_000
    max_xml_elements: int = 2_000_000  # DOCX and XLSX, every part read counted together
    max_pdf_operations: int = 1_000_000  # operators over all pages with text, forms included
    memory_mb: int = 256  # the sandbox's address-space limit (DOCUMENT_MEMORY_MB)
    cpu_seconds: int = 20  # the sandbox's CPU-time limit (DOCUMENT_CPU_SECONDS)


class Block(NamedTuple):
    """A piece of a document's text and where it came from (see the module's docstring)."""

    text: str
    anchor: Anchor


@dataclass(frozen=True)
class Extracted:
    """The text of a document, with its kind, its number of pages or sheets (PDF, XLSX) and its blocks."""

    kind: str
    text: str
    pages: int | None
    truncated: bool
    blocks: list[Block] = field(default_factory=list)


class DocumentError(Exception):
    """A file that cannot be read; .reason is a short, user-readable explanation, .code a stable one."""

    def __init__(self, code: str, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or REASONS.get(code, "The file cannot be read.")
        super().__init__(self.reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.reason))


def out_of_memory(limits: Limits) -> DocumentError:
    """The error of a file that needs more memory than the sandbox gives."""
    return DocumentError("out_of_memory", f"The file needs more than {limits.memory_mb} MB of memory to read.")


def out_of_time(limits: Limits) -> DocumentError:
    """The error of a file that needs more processing time than the sandbox gives."""
    return DocumentError("timeout", f"The file ran out of its {limits.cpu_seconds} s of processing time.")


class _CallbackError(Exception):
    """Carries an exception raised by the caller's progress callback past the 'corrupt' net."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


class _Budget:
    """One count of work for the whole document; DocumentError 'too_complex' once it passes its limit."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.used = 0

    def spend(self, amount: int = 1) -> None:
        """Count work done (or about to be done)."""
        self.used += amount
        if self.used > self.limit:
            raise DocumentError("too_complex", f"The file is too complex: more than {self.limit:,} {self.what}.")


def detect_kind(data: bytes) -> str:
    """Tell the kind of a document from its content: pdf, docx, xlsx, csv, markdown or txt."""
    if data[:1024].lstrip().startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        return _zip_kind(data)
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise DocumentError("unsupported", "Old Office formats (.doc, .xls) and password-protected Office files "
                                           "are not supported; save the file as .docx or .xlsx.")
    text = _decode_text(data)
    if text is None:
        raise DocumentError("unsupported")
    return _text_kind(text)


def extract(data: bytes, limits: Limits = Limits(), progress: Progress | None = None) -> Extracted:
    """Extract the text of a document in this process; raise DocumentError (and nothing else) for unusable input.

    Uploads go through luca.sandbox.extract_isolated, which runs this in a confined child process.
    """
    if len(data) > limits.max_bytes:
        raise DocumentError("too_large", f"The file is larger than {_size(limits.max_bytes)}.")
    if not data.strip():
        raise DocumentError("empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _extract(data, limits, progress)
    except DocumentError as exc:
        log.info("document refused: %s", exc.code)
        raise
    except _CallbackError as exc:
        raise exc.error from None
    except MemoryError:
        raise out_of_memory(limits) from None
    except Exception as exc:  # the parsing libraries raise all kinds of exceptions on hostile input
        if isinstance(exc, etree.XMLSyntaxError) and exc.code == etree.ErrorTypes.ERR_NO_MEMORY:
            raise out_of_memory(limits) from None  # libxml2 reports a failed allocation as a parse error
        log.warning("document parsing failed: %r", exc)
        raise DocumentError("corrupt") from exc


def _extract(data: bytes, limits: Limits, progress: Progress | None) -> Extracted:
    kind = detect_kind(data)
    if kind == "pdf":
        return _extract_pdf(data, limits, progress)
    if kind in ("docx", "xlsx"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_zip(archive, limits)
            budget = _Budget(limits.max_xml_elements, "XML elements")
            if kind == "docx":
                return _extract_docx(archive, limits, budget)
            return _extract_xlsx(archive, limits, budget, progress)
    text = _decode_text(data) or ""
    if kind == "csv":
        return _extract_csv(_normalise(text), limits)
    text = _clean(text)
    if not text.strip():
        raise DocumentError("empty")
    truncated = len(text) > limits.max_chars
    text = text[: limits.max_chars]
    return Extracted(kind=kind, text=text, pages=None, truncated=truncated, blocks=line_blocks(text))


class _Text:
    """Collects cleaned pieces of text, each with its anchor, until the character budget is spent."""

    def __init__(self, max_chars: int, separator: str, max_rows: int = 0) -> None:
        self.max_chars = max_chars
        self.max_rows = max_rows
        self.separator = separator
        self.parts: list[str] = []
        self.anchors: list[Anchor] = []
        self.overflow: list[str] = []  # pieces past MAX_BLOCKS, joined to the last block
        self.length = -len(separator)
        self.rows = 0
        self.truncated = False

    def add(self, piece: str, anchor: Anchor) -> bool:
        """Add a piece unless it is blank; False once the budget is spent and reading should stop."""
        piece = _clean(piece) if piece else piece
        if piece.strip():
            if len(self.parts) < MAX_BLOCKS:
                self.parts.append(piece)
                self.anchors.append(anchor)
            else:
                self.overflow.append(piece)
            self.length += len(self.separator) + len(piece)
        self.truncated = self.truncated or self.length > self.max_chars
        return not self.truncated

    def add_row(self, line: str, anchor: Anchor) -> bool:
        """Add a table row unless it is empty, counting it against the row budget."""
        if line and self.rows >= self.max_rows:
            self.truncated = True
        if not line or self.truncated:
            return not self.truncated
        self.rows += 1
        return self.add(line, anchor)

    def result(self, kind: str, pages: int | None, empty_reason: str | None = None) -> Extracted:
        """The collected text and its blocks, cut to the budget; DocumentError 'empty' when there is none."""
        if not self.parts:
            raise DocumentError("empty", empty_reason)
        if self.overflow:
            self.parts[-1] = self.separator.join([self.parts[-1], *self.overflow])
            self.overflow = []
        text = self.separator.join(self.parts)[: self.max_chars]
        blocks, start = [], 0
        for part, anchor in zip(self.parts, self.anchors):
            if start >= len(text):
                break
            blocks.append(Block(part[: len(text) - start].strip("\n"), anchor))
            start += len(part) + len(self.separator)
        return Extracted(kind=kind, text=text, pages=pages, truncated=self.truncated, blocks=blocks)


def _size(count: int) -> str:
    return f"{count / (1024 * 1024):.3g} MB" if count >= 1024 * 1024 else f"{count:,} bytes"


def _clean(text: str) -> str:
    return _CONTROL_CHARS.sub("", _normalise(text))


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _short(text: str) -> str:
    """A heading or name as an anchor holds it: one line, cut to MAX_ANCHOR_CHARS."""
    return " ".join(_clean(text).split())[:MAX_ANCHOR_CHARS]


def _report(progress: Progress | None, fraction: float) -> None:
    if progress is None:
        return
    try:
        progress(fraction)
    except Exception as exc:
        raise _CallbackError(exc) from exc


# -- text ----------------------------------------------------------------------------------------


def _decode_text(data: bytes) -> str | None:
    if data.startswith(codecs.BOM_UTF8):
        encodings = ["utf-8-sig"]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ["utf-16"]
    else:
        encodings = ["utf-8"] if b"\x00" in data else ["utf-8", "cp1252"]
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text if _looks_like_text(text) else None
    return None


def _looks_like_text(text: str) -> bool:
    sample = text[:SNIFF_CHARS]
    return "\x00" not in sample and len(_BINARY_CHARS.findall(sample)) <= len(sample) * 0.02


def _text_kind(text: str) -> str:
    sample = _sample(_normalise(text[: SNIFF_CHARS + 1]))
    if _csv_delimiter(sample) is not None:
        return "csv"
    return "markdown" if _MARKDOWN.search(sample) or _MARKDOWN_TABLE_RULE.search(sample) else "txt"


def _sample(text: str) -> str:
    """The start of a text, ending on a whole line when the text is longer."""
    if len(text) <= SNIFF_CHARS:
        return text
    sample = text[:SNIFF_CHARS]
    return sample[: sample.rfind("\n")] if "\n" in sample else sample


def line_blocks(text: str) -> list[Block]:
    """The paragraphs of a text (runs of lines between blank ones), each anchored to its line range."""
    lines = text.split("\n")
    ranges: list[tuple[int, int]] = []  # [first, end) line indexes
    first = None
    for index, line in enumerate([*lines, ""]):
        if line.strip() and first is None:
            first = index
        elif not line.strip() and first is not None:
            ranges.append((first, index))
            first = None
    if len(ranges) > MAX_BLOCKS:
        ranges[MAX_BLOCKS - 1 :] = [(ranges[MAX_BLOCKS - 1][0], ranges[-1][1])]
    return [Block("\n".join(lines[first:end]), {"lines": f"{first + 1}-{end}"}) for first, end in ranges]


def _csv_delimiter(sample: str) -> str | None:
    """The delimiter that splits at least 2 lines, and 3/4 of all, into the same number (> 1) of fields.

    csv.Sniffer is not used: on crafted input its regular expressions take quadratic to exponential time
    (CPython gh-98820, gh-109638; 200 characters already take seconds). Trial parsing is linear.
    """
    if _MARKDOWN_TABLE_RULE.search(sample):
        return None
    best, best_score = None, (0, 0)
    for delimiter in CSV_DELIMITERS:
        try:
            rows = csv.reader(io.StringIO(sample), delimiter=delimiter, skipinitialspace=True)
            counts = Counter(len(row) for row in rows if any(row))
        except csv.Error:
            continue
        lines, width = max(((n, w) for w, n in counts.items() if w > 1), default=(0, 0))
        if lines >= 2 and lines * 4 >= sum(counts.values()) * 3 and (lines, width) > best_score:
            best, best_score = delimiter, (lines, width)
    return best


def _extract_csv(text: str, limits: Limits) -> Extracted:
    delimiter = _csv_delimiter(_sample(text)) or ","
    collector = _Text(limits.max_chars, "\n", limits.max_rows)
    try:
        rows = csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True)
        for number, row in enumerate(rows, start=1):
            if not collector.add_row(_row_text(row), {"row": number}):
                break
    except csv.Error as exc:  # e.g. an unclosed quote swallowing the rest of the file into one huge field
        raise DocumentError("corrupt", "The CSV file is malformed (an unclosed quote?).") from exc
    return collector.result("csv", None)


def _row_text(values: Iterable[Any]) -> str:
    cells = [_cell_text(value) for value in values]
    while cells and not cells[-1]:
        cells.pop()
    return " | ".join(cells)


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime) and value.time() == datetime.min.time():
        value = value.date()
    return " ".join(str(value).split())


# -- PDF -----------------------------------------------------------------------------------------

# What is not an operator in a content stream: strings (nested one level deep), hex strings, comments.
_PDF_NOT_OPERATORS = re.compile(rb"\((?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\)|<[0-9A-Fa-f\s]*>|%[^\r\n]*", re.DOTALL)
_PDF_OPERATOR = re.compile(rb"(?<![^\s()<>\[\]{}])[A-Za-z'\"][^\s()<>\[\]{}/%]*")
_PDF_MAY_SHOW_TEXT = re.compile(rb"T[jJ]|Do|['\"]")  # pypdf parses a stream holding these bytes anywhere
_PDF_DRAW_FORM = re.compile(rb"/([^\s()<>\[\]{}/%]+)\s+Do(?![^\s()<>\[\]{}/%])")


def _extract_pdf(data: bytes, limits: Limits, progress: Progress | None) -> Extracted:
    # pypdf (strict=False) silently reads an earlier revision of a cut file; readers expect %%EOF in the last KB.
    if b"%%EOF" not in data[-PDF_EOF_WINDOW:]:
        raise DocumentError("corrupt", "The PDF file is incomplete or damaged.")
    try:
        with apply_configuration(stream_parsing_work_maximum_count=PDF_MAX_TOKENS_PER_STREAM):
            return _read_pdf(data, limits, progress)
    except LimitReachedError as exc:  # e.g. "Reached maximum number of tokens per stream."
        raise DocumentError("too_complex", f"The PDF is too complex: {str(exc).rstrip('.').lower()} "
                                           f"(a limit of the PDF reader).") from None


def _read_pdf(data: bytes, limits: Limits, progress: Progress | None) -> Extracted:
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        _unlock(reader)
    count = len(reader.pages)
    if count == 0:
        raise DocumentError("corrupt", "The PDF file has no readable pages.")
    if count > limits.max_pages:
        raise DocumentError("too_many_pages", f"The PDF has {count} pages; at most {limits.max_pages} are accepted.")
    _count_operations(reader, _Budget(limits.max_pdf_operations, "drawing operations"))
    collector = _Text(limits.max_chars, "\n\n")
    for index, page in enumerate(reader.pages):
        collector.add(page.extract_text() or "", {"page": index + 1})
        _report(progress, 1.0 if collector.truncated else (index + 1) / count)
        if collector.truncated:
            break
    return collector.result("pdf", count, "No text could be extracted; the PDF may contain only scanned images.")


def _count_operations(reader: PdfReader, budget: _Budget) -> None:
    """Spend the budget on the operators pypdf will interpret, over all pages, before it parses any.

    pypdf parses a page's content stream (at some 12 µs an operator here) again for every page that shows
    it, so 200 pages sharing one stream of 160,000 operators would take minutes. A regular expression
    counts each stream once, in milliseconds, and a page costs what its stream and the forms it draws hold.
    A stream that cannot show text costs nothing: pypdf's text extraction skips it unread.
    """
    counted: dict[int, int] = {}
    for page in reader.pages:
        contents = page.get("/Contents")
        if contents is not None:
            budget.spend(_operations(contents.get_object(), page.get("/Resources"), counted, 0))


def _operations(content: Any, resources: Any, counted: dict[int, int], depth: int) -> int:
    """The operators of a content stream (or array of streams) that may show text, and of the forms it draws."""
    key = id(content)
    if key not in counted:
        counted[key] = 0  # a form that draws itself counts once
        parts = content if isinstance(content, list) else [content]
        data = b"\n".join(part.get_object().get_data() for part in parts)
        if not _PDF_MAY_SHOW_TEXT.search(data):
            return 0
        code = _PDF_NOT_OPERATORS.sub(b" ", data)
        total = sum(1 for _ in _PDF_OPERATOR.finditer(code))
        forms = _forms(resources) if depth < PDF_MAX_FORM_DEPTH else {}
        for name in _PDF_DRAW_FORM.findall(code) if forms else ():
            if (form := forms.get(name)) is not None:
                total += _operations(form, form.get("/Resources", resources), counted, depth + 1)
        counted[key] = total
    return counted[key]


def _forms(resources: Any) -> dict[bytes, StreamObject]:
    """The form XObjects of a resource dictionary, by name as a content stream writes it."""
    xobjects = resources.get_object().get("/XObject") if resources is not None else None
    forms = {}
    for name, value in (xobjects.get_object().items() if xobjects is not None else ()):
        value = value.get_object()
        if isinstance(value, StreamObject) and value.get("/Subtype") == "/Form":
            forms[name[1:].encode("latin-1", "replace")] = value
    return forms


def _unlock(reader: PdfReader) -> None:
    """Open a PDF that is encrypted with an empty user password; refuse any other encrypted PDF."""
    try:
        unlocked = bool(reader.decrypt(""))
    except Exception as exc:  # e.g. AES without the optional crypto dependency, or a broken /Encrypt
        log.info("PDF decryption failed: %r", exc)
        unlocked = False
    if not unlocked:
        raise DocumentError("encrypted")


# -- Office (ZIP) --------------------------------------------------------------------------------



class _Tags:
    """The names lxml gives the tags and attributes of one namespace: _Tags(ns).p == "{ns}p" (made once each)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def __getattr__(self, name: str) -> str:
        value = f"{{{self.namespace}}}{name}"
        setattr(self, name, value)
        return value


_W = _Tags("http://schemas.openxmlformats.org/wordprocessingml/2006/main")
_X = _Tags("http://schemas.openxmlformats.org/spreadsheetml/2006/main")
_X_INLINE_STRING = getattr(_X, "is")  # a keyword
_RELATIONSHIP = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
_RELATIONSHIP_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
# What the inner elements of a run (w:r) add to its text, as python-docx reads them; w:br depends on its type.
_RUN_TEXT = {_W.tab: "\t", _W.ptab: "\t", _W.cr: "\n", _W.noBreakHyphen: "-"}


def _zip_kind(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except Exception:  # zipfile raises more than BadZipFile on damaged archives
        raise DocumentError("corrupt", "The file looks like a ZIP archive but is damaged.") from None
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    raise DocumentError("unsupported", "ZIP archives are only accepted as Word (.docx) or Excel (.xlsx) files.")


def _check_zip(archive: zipfile.ZipFile, limits: Limits) -> None:
    """Refuse ZIP bombs before anything is inflated.

    zipfile never inflates a member past the size declared in the central directory (it stops there and
    then fails the CRC check), so bounding the declared sizes bounds the real work, even when headers lie.
    """
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise DocumentError("zip_bomb", "The file contains too many parts.")
    if sum(member.file_size for member in members) > limits.max_uncompressed_bytes:
        raise DocumentError("zip_bomb")
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_CHECK_MIN_BYTES and ratio > limits.max_compression_ratio:
            raise DocumentError("zip_bomb")


def _xml(archive: zipfile.ZipFile, name: str, budget: _Budget) -> Iterator[Any]:
    """The elements of one XML part, each as it ends, counted against the budget.

    Only the path from the root to the current element stays in memory: an element is cleared once the
    caller has seen it and removed from its parent when its next sibling ends. No DTD, no entities.
    """
    with archive.open(name) as member:
        for _, element in etree.iterparse(member, events=("end",), resolve_entities=False, no_network=True,
                                          load_dtd=False, remove_comments=True, remove_pis=True):
            budget.used += 1  # budget.spend(), inlined: this runs for every element
            if budget.used > budget.limit:
                budget.spend(0)
            yield element
            element.clear()
            previous = element.getprevious()
            if previous is not None:
                element.getparent().remove(previous)


def _extract_docx(archive: zipfile.ZipFile, limits: Limits, budget: _Budget) -> Extracted:
    """The body's paragraphs and table rows in order (cells joined by ' | '), as python-docx reads them."""
    headings = _heading_styles(archive, budget)
    collector = _Text(limits.max_chars, "\n")
    text: list[str] = []  # of the paragraph being read
    cell: list[str] = []  # paragraphs of the table cell being read
    cells: list[str] = []  # of the table row being read
    is_heading, heading, position, row = False, None, 0, 0
    paragraph_tag, text_tag, break_tag, style_tags = _W.p, _W.t, _W.br, (_W.pStyle, _W.outlineLvl)
    for element in _xml(archive, "word/document.xml", budget):
        tag = element.tag
        if tag == paragraph_tag:  # most elements of a hostile file are (empty) paragraphs: checked first
            place = _docx_place(element)
            if place == "body":
                position += 1
                if text:
                    paragraph = "".join(text)
                    if is_heading and paragraph.strip():
                        heading = _short(paragraph)
                    if not collector.add(paragraph, {"heading": heading, "paragraph": position}):
                        break
            elif place == "cell":
                cell.append("".join(text))
            if place:
                text, is_heading = [], False
        elif tag == text_tag or tag == break_tag or tag in _RUN_TEXT:
            if _docx_place(_run_paragraph(element)):
                if tag == text_tag:
                    text.append(element.text or "")
                elif tag == break_tag:
                    text.append("\n" if element.get(_W.type, "textWrapping") == "textWrapping" else "")
                else:
                    text.append(_RUN_TEXT[tag])
        elif tag in style_tags:
            properties = element.getparent()
            if properties.tag == _W.pPr and _docx_place(properties.getparent()):
                is_heading = is_heading or tag == _W.outlineLvl or element.get(_W.val) in headings
        elif tag == _W.tc and _docx_place(element.getparent().getparent()) == "body":
            cells.append("\n".join(cell))
            cell = []
        elif tag == _W.tr and _docx_place(element.getparent()) == "body":
            row += 1
            if not collector.add(_row_text(cells), {"heading": heading, "paragraph": position + 1, "row": row}):
                break
            cells = []
        elif tag == _W.tbl and _docx_place(element) == "body":
            position, row = position + 1, 0
    return collector.result("docx", None)


def _run_paragraph(element: Any) -> Any:
    """The paragraph whose text an element of a run adds to (through a hyperlink), or None."""
    run = element.getparent()
    if run is None or run.tag != _W.r:
        return None
    paragraph = run.getparent()
    if paragraph is not None and paragraph.tag == _W.hyperlink:
        paragraph = paragraph.getparent()
    return paragraph if paragraph is not None and paragraph.tag == _W.p else None


def _docx_place(element: Any) -> str | None:
    """'body' for a paragraph or table of the body, 'cell' for a paragraph in a cell of such a table, else None.

    These are the paragraphs python-docx's Document.iter_inner_content and _Cell.text read; text in text
    boxes, nested tables and content controls is left out, as it was.
    """
    parent = element.getparent() if element is not None else None
    if parent is None:
        return None
    if parent.tag == _W.body:
        return "body"
    if parent.tag == _W.tc and element.tag == _W.p:
        row = parent.getparent()
        table = row.getparent() if row is not None else None
        if table is not None and table.tag == _W.tbl and _docx_place(table) == "body":
            return "cell"
    return None


def _heading_styles(archive: zipfile.ZipFile, budget: _Budget) -> set[str]:
    """The ids of the paragraph styles that are headings: named 'heading n' or 'Title', or with an outline level."""
    if "word/styles.xml" not in archive.namelist():
        return set()
    found, name, outline = set(), "", False
    for element in _xml(archive, "word/styles.xml", budget):
        if element.tag == _W.name:
            name = element.get(_W.val, "").lower()
        elif element.tag == _W.outlineLvl:
            outline = True
        elif element.tag == _W.style:
            if outline or name.startswith("heading") or name == "title":
                found.add(element.get(_W.styleId))
            name, outline = "", False
    return found


@dataclass
class _Workbook:
    """What a worksheet's cells refer to: shared strings, which styles show dates or durations, the epoch."""

    strings: list[str]
    date_styles: dict[int, bool]  # style index -> whether the format is a duration
    epoch: datetime

    def value(self, element: Any, raw: str | None, inline: list[str]) -> Any:
        """A cell's value as openpyxl (data_only) gives it, from its <c> element, <v> text and inline string."""
        from openpyxl.utils.datetime import from_excel, from_ISO8601

        kind = element.get("t", "n")
        if kind == "inlineStr":
            return "".join(inline)
        if raw is None:
            return None
        if kind == "n":
            number = float(raw) if "." in raw or "e" in raw.lower() else int(raw)
            style = int(element.get("s") or 0)
            if style not in self.date_styles:
                return number
            try:
                return from_excel(number, self.epoch, timedelta=self.date_styles[style])
            except (OverflowError, ValueError):
                return "#VALUE!"
        if kind == "s":
            return self.strings[int(raw)]
        if kind == "b":
            return bool(int(raw))
        if kind == "d":
            return from_ISO8601(raw)
        return raw  # "str" (a formula's text) and "e" (an error such as #DIV/0!)


def _extract_xlsx(archive: zipfile.ZipFile, limits: Limits, budget: _Budget, progress: Progress | None) -> Extracted:
    """Each worksheet's '## Sheet: <name>' line and its rows (cells joined by ' | '), as openpyxl reads them."""
    # openpyxl costs a quarter of a second to import; only workbooks need its cell and date helpers.
    from openpyxl.utils.cell import coordinate_to_tuple, get_column_letter

    sheets, epoch = _worksheets(archive, budget)
    if len(sheets) > limits.max_pages:
        raise DocumentError("too_many_pages", f"The workbook has {len(sheets)} sheets; "
                                              f"at most {limits.max_pages} are accepted.")
    workbook = _Workbook(_shared_strings(archive, budget), _date_styles(archive, budget), epoch)
    collector = _Text(limits.max_chars, "\n", limits.max_rows)
    for index, (name, part) in enumerate(sheets):
        collector.add(("\n" if index else "") + f"## Sheet: {name}", {"sheet": _short(name)})
        cells: dict[int, Any] = {}
        raw, inline, number, column = None, [], 0, 0
        for element in _xml(archive, part, budget):
            tag = element.tag
            if tag == _X.v:
                raw = element.text
            elif tag == _X.t and _string_part(element):
                inline.append(element.text or "")
            elif tag == _X.c:
                reference = element.get("r")
                column = coordinate_to_tuple(reference)[1] if reference else column + 1
                value = workbook.value(element, raw, inline)
                if value is not None:
                    cells[column] = value
                raw, inline = None, []
            elif tag == _X.row:
                number = int(element.get("r") or number + 1)
                if cells:
                    values = [cells.get(n) for n in range(1, max(cells) + 1)]
                    anchor = {"sheet": _short(name), "cells": f"{get_column_letter(min(cells))}{number}:"
                                                              f"{get_column_letter(max(cells))}{number}"}
                    if not collector.add_row(_row_text(values), anchor):
                        break
                cells, column = {}, 0
        _report(progress, 1.0 if collector.truncated else (index + 1) / len(sheets))
        if collector.truncated:
            break
    if not collector.rows and not collector.truncated:
        raise DocumentError("empty", "The workbook contains no data.")
    return collector.result("xlsx", len(sheets))


def _worksheets(archive: zipfile.ZipFile, budget: _Budget) -> tuple[list[tuple[str, str]], datetime]:
    """The worksheets as (name, part) in the workbook's order (chart sheets left out), and the date epoch."""
    from openpyxl.utils.datetime import CALENDAR_MAC_1904, CALENDAR_WINDOWS_1900

    parts = {}
    for element in _xml(archive, "xl/_rels/workbook.xml.rels", budget):
        if element.tag == _RELATIONSHIP and element.get("Type", "").endswith("/worksheet"):
            target = element.get("Target", "")
            parts[element.get("Id")] = target[1:] if target.startswith("/") else posixpath.normpath("xl/" + target)
    sheets, epoch = [], CALENDAR_WINDOWS_1900
    for element in _xml(archive, "xl/workbook.xml", budget):
        if element.tag == _X.sheet and element.get(_RELATIONSHIP_ID) in parts:
            sheets.append((element.get("name", ""), parts[element.get(_RELATIONSHIP_ID)]))
        elif element.tag == _X.workbookPr and element.get("date1904", "").lower() in ("1", "true"):
            epoch = CALENDAR_MAC_1904
    return sheets, epoch


def _string_part(element: Any) -> bool:
    """Whether a <t> is part of a string (<si> or <is>, directly or in a rich-text run), not a phonetic hint."""
    parent = element.getparent()
    if parent is not None and parent.tag == _X.r:
        parent = parent.getparent()
    return parent is not None and parent.tag in (_X.si, _X_INLINE_STRING)


def _shared_strings(archive: zipfile.ZipFile, budget: _Budget) -> list[str]:
    if "xl/sharedStrings.xml" not in archive.namelist():
        return []
    strings: list[str] = []
    pieces: list[str] = []
    for element in _xml(archive, "xl/sharedStrings.xml", budget):
        if element.tag == _X.t and _string_part(element):
            pieces.append(element.text or "")
        elif element.tag == _X.si:
            strings.append("".join(pieces))
            pieces = []
    return strings


def _date_styles(archive: zipfile.ZipFile, budget: _Budget) -> dict[int, bool]:
    """The cell styles (by index) whose number format shows a date or time: True for durations such as [h]:mm."""
    from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format, is_timedelta_format

    if "xl/styles.xml" not in archive.namelist():
        return {}
    custom: dict[int, str] = {}
    formats: list[int] = []
    for element in _xml(archive, "xl/styles.xml", budget):
        if element.tag == _X.numFmt:
            custom[int(element.get("numFmtId", -1))] = element.get("formatCode", "")
        elif element.tag == _X.xf and element.getparent().tag == _X.cellXfs:
            formats.append(int(element.get("numFmtId") or 0))
    codes = [custom.get(number, BUILTIN_FORMATS.get(number)) for number in formats]
    return {index: is_timedelta_format(code) for index, code in enumerate(codes) if is_date_format(code)}


# -- the sandbox's child ----------------------------------------------------------------------------


def serve_child() -> None:
    """Run as the sandbox's child: read a request on standard input, extract under the limits, answer.

    The request is one JSON line (the Limits) followed by the document's bytes. The child sets its
    limits first, then reads and parses; it answers in JSON lines on standard output: {"progress": f}
    while it reads, then {"result": {...}} or {"error": {"code", "reason"}}. Out of memory even for
    that, it exits with EXIT_OUT_OF_MEMORY.
    """
    try:
        limits = Limits(**json.loads(sys.stdin.buffer.readline(64 * 1024)))
        _confine(limits)
        data = sys.stdin.buffer.read()
        try:
            answer: dict[str, Any] = {"result": asdict(extract(data, limits, _answer_progress))}
        except DocumentError as exc:
            answer = {"error": {"code": exc.code, "reason": exc.reason}}
        del data
        _answer(answer)
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)


def _confine(limits: Limits) -> None:
    """Limit this process's address space and CPU time (SIGXCPU at the limit, SIGKILL a second later); no core."""
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = math.ceil(usage.ru_utime + usage.ru_stime) + limits.cpu_seconds  # the limit counts from start-up
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(json.dumps(message).encode() + b"\n")
    sys.stdout.buffer.flush()


def _answer_progress(fraction: float) -> None:
    _answer({"progress": fraction})


if __name__ == "__main__":
    serve_child()
