"""How numbers and tables are written in reports, comparisons and sweep logs: one place, so a
missing value reads "-" and a time reads in milliseconds everywhere."""
from __future__ import annotations


def fmt(value, spec: str = ".2f", scale: float = 1.0) -> str:
    """The value in `spec`, after `scale`; '-' for a missing value."""
    if value is None:
        return "-"
    return format(value if scale == 1 else value * scale, spec)  # an int stays an int for "d"


def ms(seconds) -> str:
    """Seconds as milliseconds with two decimals."""
    return fmt(seconds, ".2f", 1e3)


def pct(share) -> str:
    """A fraction as a percentage with two decimals."""
    return "-" if share is None else f"{100 * share:.2f}%"


def text_table(header: list[str], rows: list[list[str]], align: str | None = None,
               indent: str = "  ") -> list[str]:
    """Aligned columns; align has one letter per column, l or r (default: first l, others r)."""
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(str(r[c])) for r in [header] + rows) for c in range(len(header))]

    def line(cells):
        parts = [str(c).ljust(w) if a == "l" else str(c).rjust(w)
                 for c, w, a in zip(cells, widths, align)]
        return (indent + "  ".join(parts)).rstrip()

    return [line(header)] + [line(r) for r in rows]


def md_table(header: list[str], rows: list[list[str]], text_columns=(0,)) -> list[str]:
    """A markdown table; columns in text_columns are left-aligned, the others (numbers) right."""
    def esc(cell) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i in text_columns else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def rate_text(rps) -> str:
    """A rate in requests/s for a label: 'bulk' when there is none (everything at once)."""
    return "bulk" if rps is None else f"{rps:.2f} req/s"
