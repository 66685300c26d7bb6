"""Drawing for the Library page: the index table, the ingest report, the page grid with OCR boxes."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages import common, jobs
from pages.turn_view import display_image

GRID_COLUMNS = 4
GRID_ROWS = 3
BOX_COLOUR = "#1f77b4"


def indexes_table(folders: dict[str, Path]) -> list[dict]:
    rows = []
    for name, folder in folders.items():
        sources = common.index_sources(folder)
        rows.append({
            "name": name,
            "pages": sum(len(s.get("pages", [])) for s in sources.values()),
            "source files": len(sources),
            "folder": str(folder),
        })
    return rows


def save_uploads(uploads, folder: Path) -> list[Path]:
    """Keep uploaded files under data/uploads/<index>/ (the index refers to its sources by path).

    Only the file's base name is used, so an upload cannot write outside that folder.
    A file uploaded again under the same name replaces the old one (the index then re-ingests it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for upload in uploads:
        name = Path(upload.name).name.strip() or "upload"
        if name.startswith("."):
            name = "_" + name
        path = folder / name
        path.write_bytes(upload.getvalue())
        saved.append(path)
    return saved


def index_for_ingest(folder: Path):
    with st.spinner("Opening the index (loads the text embedder the first time)…"):
        return common.open_index(folder)


def show_report(job: jobs.Job) -> None:
    """What the last ingestion did: counts, and every skipped file with its reason."""
    if job.error:
        st.error(f"Indexing failed: {common.md_escape(job.error)}")
        return
    report = job.result
    summary = (
        f"{len(report.added)} pages added, {len(report.removed)} removed, {report.unchanged_files} files unchanged, "
        f"{len(report.skipped)} skipped, in {report.seconds:.1f} s."
    )
    if report.skipped and not report.added and not report.unchanged_files:
        st.error("Nothing could be indexed. " + summary)
    elif report.skipped:
        st.warning(summary)
    else:
        st.success(summary)
    if report.skipped:
        st.dataframe([{"file": s.path, "why it was skipped": s.reason} for s in report.skipped], hide_index=True)


def page_browser(folder: Path) -> None:
    """A paged grid of the index's pages; one page opened with its text boxes drawn and listed."""
    from agent.figures import page_figure

    page_ids = common.index_page_ids(folder)
    if not page_ids:
        st.info("This index has no pages yet.")
        return
    with st.spinner("Opening the index…"):
        index = common.open_index(folder)
    per_grid = GRID_COLUMNS * GRID_ROWS
    grids = (len(page_ids) + per_grid - 1) // per_grid
    grid = st.number_input(f"Grid page (of {grids})", 1, grids, 1, key=f"library_grid_{folder.name}") if grids > 1 else 1
    shown = page_ids[(grid - 1) * per_grid : grid * per_grid]
    for start in range(0, len(shown), GRID_COLUMNS):
        for column, page_id in zip(st.columns(GRID_COLUMNS), shown[start : start + GRID_COLUMNS]):
            page = index.page(page_id)
            picture = display_image(page.image_file, 360)
            with column:
                if picture is None:
                    st.caption(common.md_escape(f"{page_id}: image missing"))
                else:
                    st.image(picture[0], caption=f"{page_id} · {page.text_source} · {len(page.boxes)} boxes", width="stretch")

    chosen = st.selectbox("Open a page", page_ids, key=f"library_open_{folder.name}")
    page = index.page(chosen)
    picture = display_image(page.image_file, 1280)
    left, right = st.columns([3, 2])
    with left:
        if picture is None:
            st.error(f"The image of {common.md_escape(chosen)} is missing from the index folder.")
        else:
            boxes = [(b.box, str(i + 1), BOX_COLOUR) for i, b in enumerate(page.boxes)]  # numbered as in the table
            figure = page_figure(picture[0], region=(0, 0, page.width, page.height), boxes=boxes, height=640)
            st.plotly_chart(figure, key=f"library_figure_{chosen}", config={"displaylogo": False})
    with right:
        st.caption(common.md_escape(f"{page.source} · page {page.page} · {page.width}x{page.height} px · text from {page.text_source}"))
        st.dataframe(
            [{"#": i + 1, "text": b.text, "confidence": round(b.confidence, 3)} for i, b in enumerate(page.boxes)],
            hide_index=True,
            height=600,
        )

