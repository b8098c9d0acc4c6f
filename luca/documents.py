"""Safe text extraction from uploaded documents: PDF, DOCX, XLSX, CSV, plain text and Markdown.

The background worker feeds this module whatever users upload, so every input is treated as hostile:
the size limit is checked before any parsing, ZIP containers are inspected for bombs before an Office
library sees them, library warnings are silenced, and every library failure ends as a DocumentError.
Everything happens in memory; nothing touches the file system.
"""
from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import docx
import openpyxl
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph
from pypdf import PdfReader, apply_configuration
from pypdf.errors import LimitReachedError

log = logging.getLogger(__name__)

Progress = Callable[[float], None]

MAX_ZIP_MEMBERS = 10_000
RATIO_CHECK_MIN_BYTES = 1024 * 1024  # small members may compress extremely well without being bombs
SNIFF_CHARS = 64 * 1024
CSV_DELIMITERS = ",;\t|"
PDF_EOF_WINDOW = 1024
PDF_MAX_TOKENS_PER_STREAM = 500_000  # pypdf allows 2 million, about 5 s of CPU for one page

REASONS = {
    "too_large": "The file is too large.",
    "empty": "The file contains no text.",
    "unsupported": "This file type is not supported; upload a PDF, Word, Excel, CSV or text file.",
    "corrupt": "The file is damaged or incomplete and cannot be read.",
    "encrypted": "The file is password-protected; upload an unprotected copy.",
    "zip_bomb": "The file expands to an unreasonable size and was refused.",
    "too_many_pages": "The document has too many pages.",
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


@dataclass(frozen=True)
class Extracted:
    """The text of a document, with its kind and (for PDF and XLSX) its number of pages or sheets."""

    kind: str
    text: str
    pages: int | None
    truncated: bool


class DocumentError(Exception):
    """A file that cannot be read; .reason is a short, user-readable explanation, .code a stable one."""

    def __init__(self, code: str, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or REASONS.get(code, "The file cannot be read.")
        super().__init__(self.reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.reason))


class _CallbackError(Exception):
    """Carries an exception raised by the caller's progress callback past the 'corrupt' net."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


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
    """Extract the text of a document; raise DocumentError (and nothing else) for any unusable input."""
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
        raise DocumentError("too_large", "The file needs too much memory to read.") from None
    except Exception as exc:  # the parsing libraries raise all kinds of exceptions on hostile input
        log.warning("document parsing failed: %r", exc)
        raise DocumentError("corrupt") from exc


def _extract(data: bytes, limits: Limits, progress: Progress | None) -> Extracted:
    kind = detect_kind(data)
    if kind == "pdf":
        return _extract_pdf(data, limits, progress)
    if kind in ("docx", "xlsx"):
        _check_zip(data, limits)
        return _extract_docx(data, limits) if kind == "docx" else _extract_xlsx(data, limits, progress)
    text = _normalise(_decode_text(data) or "")
    if kind == "csv":
        return _extract_csv(text, limits)
    collector = _Text(limits.max_chars, "")
    collector.add(text)
    return collector.result(kind, None)


class _Text:
    """Collects cleaned pieces of text until the character budget is spent."""

    def __init__(self, max_chars: int, separator: str, max_rows: int = 0) -> None:
        self.max_chars = max_chars
        self.max_rows = max_rows
        self.separator = separator
        self.parts: list[str] = []
        self.length = -len(separator)
        self.rows = 0
        self.truncated = False

    def add(self, piece: str) -> bool:
        """Add a piece unless it is blank; False once the budget is spent and reading should stop."""
        piece = _clean(piece)
        if piece.strip():
            self.parts.append(piece)
            self.length += len(self.separator) + len(piece)
        self.truncated = self.truncated or self.length > self.max_chars
        return not self.truncated

    def add_row(self, line: str) -> bool:
        """Add a table row unless it is empty, counting it against the row budget."""
        if line and self.rows >= self.max_rows:
            self.truncated = True
        if not line or self.truncated:
            return not self.truncated
        self.rows += 1
        return self.add(line)

    def result(self, kind: str, pages: int | None, empty_reason: str | None = None) -> Extracted:
        """The collected text, cut to the budget; DocumentError 'empty' when there is none."""
        if not self.parts:
            raise DocumentError("empty", empty_reason)
        text = self.separator.join(self.parts)[: self.max_chars]
        return Extracted(kind=kind, text=text, pages=pages, truncated=self.truncated)


def _size(count: int) -> str:
    return f"{count / (1024 * 1024):.3g} MB" if count >= 1024 * 1024 else f"{count:,} bytes"


def _clean(text: str) -> str:
    return _CONTROL_CHARS.sub("", _normalise(text))


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


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
        for row in csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True):
            if not collector.add_row(_row_text(row)):
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


def _extract_pdf(data: bytes, limits: Limits, progress: Progress | None) -> Extracted:
    # pypdf (strict=False) silently reads an earlier revision of a cut file; readers expect %%EOF in the last KB.
    if b"%%EOF" not in data[-PDF_EOF_WINDOW:]:
        raise DocumentError("corrupt", "The PDF file is incomplete or damaged.")
    try:
        with apply_configuration(stream_parsing_work_maximum_count=PDF_MAX_TOKENS_PER_STREAM):
            return _read_pdf(data, limits, progress)
    except LimitReachedError:
        raise DocumentError("too_large", "The PDF is too complex to read.") from None


def _read_pdf(data: bytes, limits: Limits, progress: Progress | None) -> Extracted:
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        _unlock(reader)
    count = len(reader.pages)
    if count == 0:
        raise DocumentError("corrupt", "The PDF file has no readable pages.")
    if count > limits.max_pages:
        raise DocumentError("too_many_pages", f"The PDF has {count} pages; at most {limits.max_pages} are accepted.")
    collector = _Text(limits.max_chars, "\n\n")
    for index, page in enumerate(reader.pages):
        collector.add(page.extract_text() or "")
        _report(progress, 1.0 if collector.truncated else (index + 1) / count)
        if collector.truncated:
            break
    return collector.result("pdf", count, "No text could be extracted; the PDF may contain only scanned images.")


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


def _check_zip(data: bytes, limits: Limits) -> None:
    """Refuse ZIP bombs before a library inflates anything.

    zipfile never inflates a member past the size declared in the central directory (it stops there and
    then fails the CRC check), so bounding the declared sizes bounds the real work, even when headers lie.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise DocumentError("zip_bomb", "The file contains too many parts.")
    if sum(member.file_size for member in members) > limits.max_uncompressed_bytes:
        raise DocumentError("zip_bomb")
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_CHECK_MIN_BYTES and ratio > limits.max_compression_ratio:
            raise DocumentError("zip_bomb")


def _extract_docx(data: bytes, limits: Limits) -> Extracted:
    document = docx.Document(io.BytesIO(data))
    collector = _Text(limits.max_chars, "\n")
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            collector.add(block.text)
        elif isinstance(block, Table):
            # Walk the <w:tc> elements: Row.cells repeats a cell per gridSpan, which a hostile file can make huge.
            for tr in block._tbl.tr_lst:
                if not collector.add(_row_text(_Cell(tc, block).text for tc in tr.tc_lst)):
                    break
        if collector.truncated:
            break
    return collector.result("docx", None)


def _extract_xlsx(data: bytes, limits: Limits, progress: Progress | None) -> Extracted:
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets = workbook.worksheets
        if len(sheets) > limits.max_pages:
            raise DocumentError("too_many_pages", f"The workbook has {len(sheets)} sheets; "
                                                  f"at most {limits.max_pages} are accepted.")
        collector = _Text(limits.max_chars, "\n", limits.max_rows)
        for index, sheet in enumerate(sheets):
            collector.add(("\n" if index else "") + f"## Sheet: {sheet.title}")
            sheet.reset_dimensions()  # otherwise every row is padded to the width the file declares
            for values in sheet.iter_rows(values_only=True):
                if not collector.add_row(_row_text(values)):
                    break
            _report(progress, 1.0 if collector.truncated else (index + 1) / len(sheets))
            if collector.truncated:
                break
        if not collector.rows and not collector.truncated:
            raise DocumentError("empty", "The workbook contains no data.")
        return collector.result("xlsx", len(sheets))
    finally:
        workbook.close()
