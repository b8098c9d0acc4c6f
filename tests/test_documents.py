"""Text extraction from uploaded documents, on real files built in memory, hostile ones included."""
from __future__ import annotations

import datetime
import io
import os
import pickle
import random
import struct
import time
import zipfile

import docx
import openpyxl
import pytest
from docx.oxml.ns import qn
from lxml import etree

from luca.documents import MAX_BLOCKS, Block, DocumentError, Extracted, Limits, detect_kind, extract
from tests.support.documents import (
    HELVETICA,
    PDF,
    append_revision,
    empty_paragraphs_docx,
    encrypt_pdf,
    make_docx,
    make_docx_bomb,
    make_pdf,
    make_xlsx,
    make_zip,
    pdf_file,
    pdf_stream,
    shared_stream_pdf,
)


def error_code(data: bytes, limits: Limits = Limits()) -> str:
    with pytest.raises(DocumentError) as info:
        extract(data, limits)
    assert info.value.reason and str(info.value) == info.value.reason
    return info.value.code


# -- PDF -----------------------------------------------------------------------------------------


def test_pdf_text_pages_and_progress() -> None:
    calls: list[float] = []
    result = extract(PDF, progress=calls.append)
    assert result.kind == "pdf" and result.pages == 2 and not result.truncated
    assert result.text == "Hello from page one\n\nTotals on page two"
    assert calls == [0.5, 1.0]


def test_truncated_pdf_is_corrupt() -> None:
    assert error_code(PDF[: len(PDF) // 2]) == "corrupt"
    assert error_code(PDF[:-3]) == "corrupt"  # only the end-of-file marker is cut


def test_pdf_cut_inside_an_incremental_update_is_corrupt() -> None:
    """pypdf (strict=False) would silently read the older revision that precedes the cut."""
    updated = append_revision(PDF, "Corrected page one")
    assert extract(updated).text.startswith("Corrected page one")
    assert error_code(updated[: len(PDF) + 1500]) == "corrupt"


def test_garbage_after_pdf_header_is_corrupt() -> None:
    assert error_code(b"%PDF-1.7\n" + random.Random(1).randbytes(2000)) == "corrupt"
    assert error_code(b"%PDF-1.7\n" + random.Random(2).randbytes(2000) + b"\n%%EOF\n") == "corrupt"
    assert error_code(b"%PDF-1.4\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n") == "corrupt"


def test_encrypted_pdf() -> None:
    assert error_code(encrypt_pdf(PDF, "secret")) == "encrypted"


def test_pdf_encrypted_with_an_empty_user_password_is_read() -> None:
    assert "Totals on page two" in extract(encrypt_pdf(PDF, "")).text


def test_pdf_with_blank_pages_is_empty() -> None:
    with pytest.raises(DocumentError) as info:
        extract(make_pdf(["", ""]))
    assert info.value.code == "empty" and "scanned" in info.value.reason


def test_too_many_pages() -> None:
    assert error_code(PDF, Limits(max_pages=1)) == "too_many_pages"


def test_truncation_to_max_chars() -> None:
    calls: list[float] = []
    result = extract(PDF, Limits(max_chars=10), progress=calls.append)
    assert result.text == "Hello from" and result.truncated
    assert calls == [1.0]


def test_pdf_blocks_are_its_pages() -> None:
    assert extract(PDF).blocks == [Block("Hello from page one", {"page": 1}), Block("Totals on page two", {"page": 2})]


def test_pdf_of_200_pages_sharing_one_stream_of_160_000_operators_is_too_complex() -> None:
    """The issue's 33 KB file: pypdf would parse the shared stream once for each page, for minutes."""
    data = shared_stream_pdf()
    assert len(data) < 40_000
    started = time.process_time()
    with pytest.raises(DocumentError) as info:
        extract(data)
    assert info.value.code == "too_complex"
    assert info.value.reason == "The file is too complex: more than 1,000,000 drawing operations."
    assert time.process_time() - started < 5  # refused before pypdf parses a page


def test_every_page_showing_a_shared_stream_spends_its_operators() -> None:
    data = shared_stream_pdf(pages=10, operators=300)  # a caption of 5 operators, then 300 drawing
    assert extract(data, Limits(max_pdf_operations=3050)).pages == 10
    assert error_code(data, Limits(max_pdf_operations=3049)) == "too_complex"


def test_a_form_drawn_many_times_spends_its_operators_each_time() -> None:
    data = shared_stream_pdf(pages=2, operators=100, form=b"BT /F1 9 Tf (in a form) Tj ET")  # 2 x (100 Do + 100 x 4)
    assert "in a form" in extract(data, Limits(max_pdf_operations=1000)).text
    assert error_code(data, Limits(max_pdf_operations=999)) == "too_complex"


def test_a_stream_that_shows_no_text_costs_nothing() -> None:
    """pypdf's text extraction skips it unread."""
    data = pdf_file([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>", HELVETICA,
                     b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R "
                     b"/Resources << /Font << /F1 3 0 R >> >> >>", pdf_stream(b"0 0 m 1 1 l S\n" * 1000)])
    assert error_code(data, Limits(max_pdf_operations=10)) == "empty"


# -- Office --------------------------------------------------------------------------------------


def test_docx_paragraphs_and_table_in_order() -> None:
    result = extract(make_docx())
    assert result.kind == "docx" and result.pages is None
    assert result.text == "Quarterly report\na | b\nc | d\nClosing remarks"


def test_xlsx_sheets_and_values() -> None:
    calls: list[float] = []
    result = extract(make_xlsx(), progress=calls.append)
    assert result.kind == "xlsx" and result.pages == 2
    assert result.text == (
        "## Sheet: Income\nMonth | Amount\nJanuary | 1200\nFebruary | 1350.5\n\n"
        "## Sheet: Costs 1\nRent | 800\nCoffee | 42"
    )
    assert calls == [0.5, 1.0]


def test_xlsx_limits() -> None:
    assert error_code(make_xlsx(sheets=3), Limits(max_pages=2)) == "too_many_pages"
    result = extract(make_xlsx(), Limits(max_rows=2))
    assert result.truncated and "February" not in result.text and "Rent" not in result.text


def test_empty_workbook_is_empty() -> None:
    out = io.BytesIO()
    openpyxl.Workbook().save(out)
    assert error_code(out.getvalue()) == "empty"


@pytest.fixture(scope="module")
def docx_bomb() -> bytes:
    """The zip bomb, built once for the module."""
    return make_docx_bomb()


def test_zip_bomb_disguised_as_docx(docx_bomb: bytes) -> None:
    assert detect_kind(docx_bomb) == "docx"
    started = time.monotonic()
    assert error_code(docx_bomb) == "zip_bomb"
    assert time.monotonic() - started < 1


def test_zip_member_with_a_bomb_ratio() -> None:
    bomb = make_zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": bytes(5 * 1024 * 1024)}, level=9)
    assert error_code(bomb) == "zip_bomb"
    assert error_code(make_docx(), Limits(max_uncompressed_bytes=1000)) == "zip_bomb"


def test_zip_that_lies_about_sizes_is_corrupt() -> None:
    """A central directory declaring a small size does not make zipfile inflate more than declared."""
    with zipfile.ZipFile(io.BytesIO(make_docx())) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    noise = random.Random(3).randbytes(1024 * 1024).hex().encode()
    members["word/document.xml"] += b"<!-- " + noise + b" -->"  # 2 MB more, still valid XML, compresses 2:1
    honest = make_zip(members)
    assert "Quarterly report" in extract(honest).text
    lying = bytearray(honest)
    entry = next(
        at for at in range(len(lying)) if lying.startswith(b"PK\x01\x02", at)
        and lying[at + 46 : at + 46 + struct.unpack_from("<H", lying, at + 28)[0]] == b"word/document.xml"
    )
    struct.pack_into("<I", lying, entry + 24, 1000)  # the uncompressed size in the central directory
    assert error_code(bytes(lying)) == "corrupt"


def test_other_zip_is_unsupported() -> None:
    assert error_code(make_zip({"notes.txt": b"hello", "img/logo.png": b"\x89PNG"})) == "unsupported"


@pytest.mark.slow
def test_docx_made_of_47_mb_of_empty_paragraphs_is_too_complex() -> None:
    """python-docx built a tree of it: 1.7 GB. Streamed, it stops at the element budget."""
    data = empty_paragraphs_docx()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        member = archive.getinfo("word/document.xml")
    assert len(data) < 2.5e6 and member.file_size > 45e6 and member.file_size / member.compress_size < 100
    with pytest.raises(DocumentError) as info:
        extract(data)
    assert info.value.code == "too_complex"
    assert info.value.reason == "The file is too complex: more than 2,000,000 XML elements."


def test_the_xml_element_budget_covers_every_part_read() -> None:
    data = make_xlsx()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        total = sum(len(etree.fromstring(archive.read(name)).xpath("//*")) for name in archive.namelist()
                    if name.startswith("xl/") and name.endswith((".xml", ".rels")) and "theme" not in name)
    assert extract(data, Limits(max_xml_elements=total)).pages == 2
    assert error_code(data, Limits(max_xml_elements=total // 2)) == "too_complex"


def test_docx_blocks_carry_the_nearest_heading_and_their_place() -> None:
    document = docx.Document()
    document.add_paragraph("Preface")
    document.add_heading("Results 2024", level=1)
    document.add_paragraph("Revenue grew")
    document.add_paragraph("")
    table = document.add_table(rows=2, cols=2)
    for cell, text in zip(table._cells, ["a", "b", "c", "d"]):
        cell.text = text
    document.add_heading("Costs", level=2)
    document.add_paragraph("Rent rose")
    out = io.BytesIO()
    document.save(out)
    result = extract(out.getvalue())
    assert result.text == "Preface\nResults 2024\nRevenue grew\na | b\nc | d\nCosts\nRent rose"
    assert result.blocks == [
        Block("Preface", {"heading": None, "paragraph": 1}),
        Block("Results 2024", {"heading": "Results 2024", "paragraph": 2}),
        Block("Revenue grew", {"heading": "Results 2024", "paragraph": 3}),
        Block("a | b", {"heading": "Results 2024", "paragraph": 5, "row": 1}),
        Block("c | d", {"heading": "Results 2024", "paragraph": 5, "row": 2}),
        Block("Costs", {"heading": "Costs", "paragraph": 6}),
        Block("Rent rose", {"heading": "Costs", "paragraph": 7}),
    ]


def test_docx_runs_read_as_python_docx_read_them() -> None:
    """Tabs, line breaks and hyperlinks are text; a text box and a nested table are not."""
    document = docx.Document()
    paragraph = document.add_paragraph("Net\tmargin")
    paragraph.add_run().add_break()
    paragraph.add_run("seven")
    link = paragraph._p.makeelement(qn("w:hyperlink"), {})
    link.append(paragraph.add_run(" percent")._r)
    paragraph._p.append(link)
    table = document.add_table(rows=1, cols=1)
    table.cell(0, 0).text = "outer"
    table.cell(0, 0).add_table(rows=1, cols=1).cell(0, 0).text = "inner"
    out = io.BytesIO()
    document.save(out)
    assert extract(out.getvalue()).text == "Net\tmargin\nseven percent\nouter"


def test_xlsx_blocks_carry_the_sheet_and_the_cells_of_each_row() -> None:
    result = extract(make_xlsx())
    assert result.blocks[:4] == [
        Block("## Sheet: Income", {"sheet": "Income"}),
        Block("Month | Amount", {"sheet": "Income", "cells": "A1:B1"}),
        Block("January | 1200", {"sheet": "Income", "cells": "A2:B2"}),
        Block("February | 1350.5", {"sheet": "Income", "cells": "A4:B4"}),
    ]
    assert result.blocks[-1] == Block("Coffee | 42", {"sheet": "Costs 1", "cells": "A2:B2"})


def test_xlsx_values_read_as_openpyxl_read_them() -> None:
    """Dates by their number format, booleans, formulas by their cached value, inline strings, gaps."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append([datetime.date(2024, 1, 2), datetime.datetime(2024, 1, 3, 14, 30), True, 1e20, -0.25])
    sheet["C3"] = "far"
    sheet["A4"] = "=1+1"  # openpyxl stores no cached value: an empty cell for data_only readers
    out = io.BytesIO()
    workbook.save(out)
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["xl/worksheets/sheet1.xml"] = members["xl/worksheets/sheet1.xml"].replace(
        b"</sheetData>", b'<row r="5"><c r="B5" t="inlineStr"><is><t>inline</t></is></c></row></sheetData>')
    result = extract(make_zip(members))
    assert result.text == ("## Sheet: Sheet\n2024-01-02 | 2024-01-03 14:30:00 | True | 1e+20 | -0.25\n"
                           " |  | far\n | inline")
    assert result.blocks[2].anchor == {"sheet": "Sheet", "cells": "C3:C3"}


# -- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"date,amount,vendor\n2024-01-02,12.50,Acme\n2024-01-03,7.00,Bolt\n",
         "date | amount | vendor\n2024-01-02 | 12.50 | Acme\n2024-01-03 | 7.00 | Bolt"),
        (b"Datum;Betrag;Lieferant\r\n02.01.2024;12,50;Acme\r\n\r\n03.01.2024;7,00;Bolt\r\n",
         "Datum | Betrag | Lieferant\n02.01.2024 | 12,50 | Acme\n03.01.2024 | 7,00 | Bolt"),
        (b'name,note\n"Smith, J.","said ""hi"""\nDoe,ok\n', 'name | note\nSmith, J. | said "hi"\nDoe | ok'),
    ],
)
def test_csv(content: bytes, expected: str) -> None:
    result = extract(content)
    assert (result.kind, result.text, result.pages) == ("csv", expected, None)


def test_csv_blocks_carry_their_row_number() -> None:
    result = extract(b"date,amount\n2024-01-02,12.50\n,\n2024-01-03,7.00\n")
    assert [block.anchor for block in result.blocks] == [{"row": 1}, {"row": 2}, {"row": 4}]
    assert result.blocks[2].text == "2024-01-03 | 7.00"


def test_text_blocks_are_paragraphs_with_their_line_range() -> None:
    result = extract(b"# Budget\n\nrent 800\nsalaries 5000\n\n\n- tax\n")
    assert result.blocks == [Block("# Budget", {"lines": "1-1"}), Block("rent 800\nsalaries 5000", {"lines": "3-4"}),
                             Block("- tax", {"lines": "7-7"})]


def test_blocks_are_cut_with_the_text() -> None:
    result = extract(PDF, Limits(max_chars=25))
    assert result.text == "Hello from page one\n\nTota"
    assert result.blocks == [Block("Hello from page one", {"page": 1}), Block("Tota", {"page": 2})]


def test_blocks_past_the_block_limit_join_the_last_one() -> None:
    result = extract("".join(f"{n % 10}\n\n" for n in range(MAX_BLOCKS + 10)).encode())
    assert len(result.blocks) == MAX_BLOCKS
    assert result.blocks[-1].anchor == {"lines": f"{2 * MAX_BLOCKS - 1}-{2 * MAX_BLOCKS + 19}"}
    assert result.blocks[-1].text == "\n\n".join(str(n % 10) for n in range(MAX_BLOCKS - 1, MAX_BLOCKS + 10))


@pytest.mark.parametrize(
    "content",
    [
        '"",' * 100 + '"' * 100 + "0" + '"' * 100 + "0",  # exponential in csv.Sniffer (CPython gh-109638)
        ',"a' * 30_000,  # quadratic in csv.Sniffer (CPython gh-98820)
        ('"abcdefghijklmnopqrstuvwxyz"\n' * 2_000),
    ],
)
def test_csv_detection_is_fast_on_crafted_text(content: str) -> None:
    started = time.monotonic()
    extract(content.encode())
    assert time.monotonic() - started < 1


def test_csv_row_limit() -> None:
    content = "n,square\n" + "".join(f"{n},{n * n}\n" for n in range(100))
    result = extract(content.encode(), Limits(max_rows=10))
    assert result.truncated and len(result.text.splitlines()) == 10


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"Dear accountant,\nplease find the invoices attached.\nThanks\n", "txt"),
        (b"# Budget 2024\n\nSome **bold** text.\n\n- rent\n- salaries\n", "markdown"),
        (b"See [the ledger](https://example.com/ledger) for details.\n", "markdown"),
        (b"| item | amount |\n|------|--------|\n| rent | 800 |\n| tax | 100 |\n", "markdown"),
        (b"```\ncode\n```\n", "markdown"),
    ],
)
def test_text_kinds(content: bytes, kind: str) -> None:
    result = extract(content)
    assert result.kind == kind and result.text == content.decode() and detect_kind(content) == kind


def test_text_encodings() -> None:
    assert extract("\ufeffCafé total\n".encode()).text == "Café total\n"
    assert extract("Rechnung für März\r\nSumme".encode("utf-16")).text == "Rechnung für März\nSumme"
    assert extract("Caf\u00e9 costs 12\u20ac".encode("cp1252")).text == "Café costs 12€"


def test_control_characters_are_stripped() -> None:
    assert extract(b"Total:\x07 12\tEUR\x1b\r\nDone" + b" padding" * 20).text.startswith("Total: 12\tEUR\nDone")


# -- refusals --------------------------------------------------------------------------------------


def test_binary_garbage_is_unsupported() -> None:
    noise = bytearray(os.urandom(4096))
    noise[100:110] = bytes(10)
    assert error_code(bytes(noise)) == "unsupported"
    assert error_code(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)) == "unsupported"  # legacy .doc/.xls


def test_empty_and_too_large() -> None:
    assert error_code(b"") == "empty"
    assert error_code(b"  \n\t ") == "empty"
    assert error_code(b"x" * 101, Limits(max_bytes=100)) == "too_large"


def test_document_error_is_stable_and_picklable() -> None:
    error = DocumentError("encrypted")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.reason, str(copy)) == ("encrypted", error.reason, error.reason)


def test_progress_callback_errors_propagate_unchanged() -> None:
    def fail(_: float) -> None:
        raise RuntimeError("redis is down")

    with pytest.raises(RuntimeError, match="redis is down"):
        extract(PDF, progress=fail)


# -- fuzzing ------------------------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Damage a file at random: flip bytes, cut it, splice in noise, or (for ZIPs) damage one XML member."""
    action = rng.choice(["flip", "truncate", "both", "splice", "member"])
    if action == "member" and data.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        victim = rng.choice(sorted(name for name in members if name.endswith(".xml")))
        members[victim] = mutate_bytes(members[victim], rng, rng.choice(["flip", "truncate", "splice"]))
        return make_zip(members)
    return mutate_bytes(data, rng, action)


def mutate_bytes(data: bytes, rng: random.Random, action: str) -> bytes:
    data = bytearray(data)
    if action in ("flip", "both", "member"):
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    if action in ("truncate", "both"):
        del data[rng.randrange(1, len(data)) :]
    if action == "splice":
        start = rng.randrange(len(data))
        data[start : start + rng.randint(1, 200)] = rng.randbytes(rng.randint(0, 200))
    return bytes(data)


def test_mutated_files_end_as_text_or_document_error() -> None:
    rng = random.Random(20240601)
    originals = [PDF, make_docx(), make_xlsx()]
    started = time.monotonic()
    outcomes: dict[str, int] = {}
    for n in range(200):
        sample = mutate(originals[n % len(originals)], rng)
        try:
            result = extract(sample)
        except DocumentError as exc:
            outcomes[exc.code] = outcomes.get(exc.code, 0) + 1
        else:
            assert isinstance(result, Extracted)
            outcomes["ok"] = outcomes.get("ok", 0) + 1
    assert time.monotonic() - started < 10
    assert outcomes.get("corrupt", 0) > 20
