"""Documents built in memory for tests and drills: PDF, DOCX, XLSX and ZIP files, hostile ones included."""
from __future__ import annotations

import io
import random
import zipfile
import zlib

import docx
import openpyxl
from pypdf import PdfReader, PdfWriter


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF, written by hand: one Helvetica text line per page, exact xref offsets."""
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        HELVETICA,
    ]
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(pdf_stream(content))
    return pdf_file(objects)


HELVETICA = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def pdf_stream(content: bytes, entries: bytes = b"") -> bytes:
    """A stream object's body: its dictionary (with its length) and its bytes."""
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(content), entries, content)


def pdf_file(objects: list[bytes]) -> bytes:
    """A PDF of these numbered objects (the first is the catalog), with exact xref offsets."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def shared_stream_pdf(pages: int = 200, operators: int = 160_000, form: bytes | None = None) -> bytes:
    """Pages that all show one compressed content stream: a caption, then drawing operators ("0 0 m 1 1 l S").

    With the defaults it is the issue's file: about 33 KB, 200 pages of 160,000 operators each. With
    form, each page instead draws that form's content once per operator.
    """
    drawing = b"BT /F1 12 Tf 72 720 Td (Figure 1) Tj ET\n" + b"0 0 m 1 1 l S\n" * (operators // 3)
    resources = b"/Font << /F1 3 0 R >>"
    if form is not None:
        drawing, resources = b"/Fx Do\n" * operators, resources + b" /XObject << /Fx 5 0 R >>"
    content = zlib.compress(drawing, 9)
    kids = b" ".join(b"%d 0 R" % (6 + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        HELVETICA,
        pdf_stream(content, b"/Filter /FlateDecode "),
        pdf_stream(form or b"", b"/Type /XObject /Subtype /Form /BBox [0 0 10 10] "
                                b"/Resources << /Font << /F1 3 0 R >> >> "),
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << %s >> /Contents 4 0 R >>" % resources
    return pdf_file(objects + [page] * pages)


def append_revision(pdf: bytes, text: str) -> bytes:
    """An incremental update of make_pdf's output that replaces the first page's content stream."""
    previous_xref = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() + b" " * 2000  # padding: a large revision
    out = bytearray(pdf)
    offset = len(out)
    out += b"5 0 obj\n<< /Length %d >>\nstream\n%s\nendstream\nendobj\n" % (len(content), content)
    xref = len(out)
    out += b"xref\n0 1\n0000000000 65535 f \n5 1\n%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size 8 /Root 1 0 R /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (previous_xref, xref)
    return bytes(out)


def encrypt_pdf(data: bytes, user_password: str) -> bytes:
    """The PDF encrypted with a user password (pypdf)."""
    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(data)).pages:
        writer.add_page(page)
    writer.encrypt(user_password=user_password, owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def trial_balance() -> bytes:
    """A workbook whose sheet "TB" holds the suspense balance in D14."""
    workbook = openpyxl.Workbook()
    workbook.active.title = "Notes"
    workbook.active.append(["Prepared by the controller"])
    sheet = workbook.create_sheet("TB")
    sheet.append(["Account", "Name", "Debit", "Credit"])
    for row in range(2, 30):
        if row == 14:
            sheet.append([4410, "Suspense clearing", None, 98765.43])
        else:
            sheet.append([1000 + row, f"Account {row}", row * 10, None])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def make_docx() -> bytes:
    """A small real DOCX (python-docx): two paragraphs around a 2x2 table."""
    document = docx.Document()
    document.add_paragraph("Quarterly report")
    table = document.add_table(rows=2, cols=2)
    for cell, text in zip(table._cells, ["a", "b", "c", "d"]):
        cell.text = text
    document.add_paragraph("Closing remarks")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_xlsx(sheets: int = 2) -> bytes:
    """A small real XLSX (openpyxl): an income sheet with a blank row, then cost sheets."""
    workbook = openpyxl.Workbook()
    income = workbook.active
    income.title = "Income"
    income.append(["Month", "Amount"])
    income.append(["January", 1200])
    income.append([None, None])
    income.append(["February", 1350.5])
    for n in range(1, sheets):
        sheet = workbook.create_sheet(f"Costs {n}")
        sheet.append(["Rent", 800])
        sheet.append(["Coffee", 42])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def make_zip(members: dict[str, bytes], level: int | None = None) -> bytes:
    """A ZIP archive of these members (deflated, at this level)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


PDF = make_pdf(["Hello from page one", "Totals on page two"])


def make_docx_bomb() -> bytes:
    """A 'DOCX' whose document.xml inflates to 200 MB of zeros, written in chunks."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        chunk = bytes(1024 * 1024)
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            for _ in range(200):
                member.write(chunk)
    return out.getvalue()


WORD_NAMESPACE = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def empty_paragraphs_docx(size: int = 47_000_000) -> bytes:
    """The issue's DOCX: a word/document.xml of about 47 MB of empty paragraphs (<w:p/>) that deflates to ~2 MB.

    A line break after a random half of the paragraphs keeps it from compressing better than about 27:1,
    inside every ZIP limit (ratio at most 100 for a part, 50 MB uncompressed in all).
    """
    rng = random.Random(47)
    chunk = b"".join(b"<w:p/>" + rng.choice((b"", b"\n")) for _ in range(150_000))  # 1 MB: beyond deflate's window
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(f'<?xml version="1.0"?><w:document xmlns:w="{WORD_NAMESPACE}"><w:body>'.encode())
            for _ in range(size // len(chunk)):
                member.write(chunk)
            member.write(b"</w:body></w:document>")
    return out.getvalue()


def heavy_pdf(pages: int) -> bytes:
    """A valid PDF whose pages take about 0.3 s each to extract (30,000 empty text operators a page)."""
    return make_pdf([f"Page {n}) Tj " + "() Tj " * 30_000 + "(end" for n in range(pages)])
