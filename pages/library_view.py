"""Drawing for the Library page: the index table, deleting an index, the ingest report, the page browser."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from agent import uploads
from pages import common, jobs
from pages.ui.pictures import display_image

GRID_COLUMNS = 4
GRID_ROWS = 3
BOX_COLOUR = "#1f77b4"
PAGE_MAX_HEIGHT = 860  # px: the opened page's figure, and the text table beside it
PAGE_WIDTH_GUESS = 860  # px: about what the page's column gets at 1280-1600 px, to size the figure to the page's shape


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


def save_uploads(files, folder: Path) -> list[Path]:
    """Keep Streamlit's uploaded files under data/uploads/<index>/ (agent/uploads.py: base names only)."""
    return uploads.save_uploads([(f.name, f.getvalue()) for f in files], folder)


def index_for_ingest(folder: Path):
    with st.spinner("Opening the index (loads the text embedder the first time)…"):
        return common.open_index(folder)


def delete_section(folders: dict[str, Path]) -> None:
    """Delete an index, in two steps (choose, then confirm); refused while documents are being added to it."""
    deletable = [name for name, folder in folders.items() if Path(folder).resolve().parent == common.indexes_dir().resolve()]
    done = st.session_state.pop("library_deleted", None)
    if done:
        st.success(done)
    confirming = st.session_state.get("library_confirm_delete")
    with st.expander("Delete an index", icon=":material/delete:", expanded=bool(confirming)):
        if not deletable:
            st.caption("No index under the data folder can be deleted here.")
            return
        name = st.selectbox("Index to delete", deletable, key="library_delete_name")
        folder = folders[name]
        upload_folder = common.uploads_dir(name)
        uploaded = sum(1 for p in upload_folder.rglob("*") if p.is_file()) if upload_folder.is_dir() else 0
        with_uploads = uploaded > 0 and st.checkbox(f"Also delete the {uploaded} files uploaded into it", key="library_delete_uploads",
                                                    help="Uploads are the app's copies; the files on your computer are not touched.")
        busy = jobs.registry().running(str(folder))
        if busy:
            st.caption("Documents are being added to this index; it can be deleted when that has finished.")
        if confirming != name:
            if st.button("Delete this index…", key="library_delete", disabled=busy, icon=":material/delete:"):
                st.session_state["library_confirm_delete"] = name
                st.rerun()
            return
        pages = len(common.index_page_ids(folder))
        st.warning(
            f"Delete the index **{common.md_escape(name)}** and its {pages} pages? Its folder is removed from the server"
            f"{' with its uploaded files' if with_uploads else ''}; saved trajectories are kept. This cannot be undone."
        )
        yes, no, _ = st.columns([2, 1, 4])
        if yes.button(f"Yes, delete {name}", key="library_delete_yes", type="primary", disabled=busy):
            st.session_state.pop("library_confirm_delete", None)
            try:
                deleted = common.delete_index(name, with_uploads=with_uploads)
            except common.WorkspaceError as e:
                st.error(common.md_escape(str(e)))
                return
            extra = f" and {deleted.uploads_removed} uploaded files" if deleted.uploads_removed else ""
            st.session_state["library_deleted"] = common.md_escape(f"Deleted the index {name} ({deleted.pages} pages{extra}).")
            st.rerun()
        if no.button("Cancel", key="library_delete_no"):
            st.session_state.pop("library_confirm_delete", None)
            st.rerun()


def show_report(job: jobs.Job) -> None:
    """What the last ingestion did: counts, and every skipped file (or zip member) with its reason."""
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
        st.dataframe(
            [{"file": s.path, "why it was skipped": s.reason} for s in report.skipped], hide_index=True,
            column_config={"file": st.column_config.TextColumn(width="medium"), "why it was skipped": st.column_config.TextColumn(width="large")},
        )


def page_browser(folder: Path) -> None:
    """A paged grid of the index's pages; one page opened large, its OCR text beside it (boxes on request)."""
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
                    st.image(picture[0], caption=f"{page_id} · {page.text_source} · {len(page.boxes)} text boxes", width="stretch")
    opened_page(index, page_ids, folder.name)


def opened_page(index, page_ids: list[str], index_name: str) -> None:
    from agent.figures import page_figure

    st.subheader("Open a page")
    pick, toggle = st.columns([3, 2], vertical_alignment="bottom")
    chosen = pick.selectbox("Page", page_ids, key=f"library_open_{index_name}")
    show_boxes = toggle.toggle("Show the text boxes on the page", value=False, key="library_boxes",
                               help="Outline and number every piece of text the index read on this page (a word of a PDF, a line of OCR), as numbered in the table.")
    page = index.page(chosen)
    picture = display_image(page.image_file, 1280)
    st.caption(common.md_escape(f"{page.source} · page {page.page} · {page.width}x{page.height} px · text from {page.text_source} · {len(page.boxes)} text boxes"))
    height = int(min(PAGE_MAX_HEIGHT, max(320, PAGE_WIDTH_GUESS * page.height / max(1, page.width))))  # fit the shape, no letterbox
    left, right = st.columns([3, 2])
    with left:
        if picture is None:
            st.error(f"The image of {common.md_escape(chosen)} is missing from the index folder.")
        else:
            boxes = [(b.box, str(i + 1), BOX_COLOUR) for i, b in enumerate(page.boxes)] if show_boxes else []
            figure = page_figure(picture[0], region=(0, 0, page.width, page.height), boxes=boxes, height=height)
            st.plotly_chart(figure, key=f"library_figure_{chosen}", config={"displaylogo": False})
    with right:
        if not page.boxes:
            st.info("No text was read on this page.")
            return
        with st.container(height=max(height, 560), border=False):
            st.table(  # a static table wraps long lines; its cells are Markdown, so the OCR text is escaped
                [{"line": i + 1, "text": common.md_escape(b.text), "confidence": f"{b.confidence:.2f}"} for i, b in enumerate(page.boxes)],
                hide_index=True,
            )
