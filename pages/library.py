"""Library: the named indexes, adding a server folder or uploaded files (or a zip of them), deleting an index, browsing pages."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from agent import uploads
from pages import common, jobs, library_view

st.title("Library")
folders = common.index_folders()
active = common.active_index()

# --- the indexes -------------------------------------------------------------------------------

st.subheader("Indexes")
if not folders:
    st.info("No index yet. Add a folder or upload files below; the Ask page builds the sample index on first use.")
else:
    st.dataframe(library_view.indexes_table(folders), hide_index=True)
    st.session_state["library_active"] = active[0]  # keep the widget in step with the page's index
    st.selectbox(
        "Active index (for this browser tab)", list(folders), key="library_active",
        on_change=lambda: common.set_active_index(st.session_state["library_active"]),
    )
    library_view.delete_section(folders)

# --- adding documents ------------------------------------------------------------------------

st.subheader("Add documents")
NEW = "a new index…"
targets = list(folders) + [NEW]
pending = st.session_state.pop("library_pending_target", None)  # set when an ingest created an index
if pending in targets:
    st.session_state["library_target"] = pending
    st.session_state["library_new_name"] = ""
if st.session_state.get("library_target") not in targets:
    st.session_state["library_target"] = active[0] if active else NEW
target = st.selectbox("Into", targets, key="library_target")
if target == NEW:
    name = st.text_input("Name of the new index", key="library_new_name", placeholder="e.g. my-reports").strip()
    problem = common.check_index_name(name) if name else None
    if problem:
        st.error(problem)
    elif name in folders:
        st.error(f"An index named {common.md_escape(name)} exists already; choose it above to add to it.")
    target_folder = common.indexes_dir() / name if name and not problem and name not in folders else None
else:
    target_folder = folders[target]

server_tab, upload_tab = st.tabs(["A folder or file on the server", "Upload PDFs, images or a zip"])
with server_tab:
    path_text = st.text_input("Path on the server", key="library_path", placeholder="/home/me/Documents/reports",
                              help="A folder (read with its sub-folders), a PDF, a page image, or a zip of them.")
    add_path = st.button("Index this path", disabled=target_folder is None or not path_text.strip(), key="library_add_path")
with upload_tab:
    files = st.file_uploader(
        "PDFs, page images, or a zip of them", accept_multiple_files=True, key="library_uploads",
        help="PDF, JPEG, PNG, WebP, TIFF or BMP, or a .zip holding them (unpacked on the server; anything else in it is listed as skipped). "
             "Uploads are kept under the data folder so the index can show their pages.",
    )
    add_uploads = st.button("Index the uploads", disabled=target_folder is None or not files, key="library_add_uploads")

paths: list[Path] = []
from_upload = False
if add_path:
    source = Path(path_text.strip()).expanduser()
    if not source.exists():
        st.error(f"There is no file or folder at {common.md_escape(str(source))} on the server.")
    elif not source.is_dir() and not source.is_file():
        st.error(f"{common.md_escape(str(source))} is neither a file nor a folder.")
    else:
        paths = [source.resolve()]
if add_uploads:
    paths, from_upload = library_view.save_uploads(files, common.uploads_dir(target_folder.name)), True

if paths and target_folder is not None:
    index = library_view.index_for_ingest(target_folder)
    unpack_into = common.uploads_dir(target_folder.name)

    def work(progress, index=index, paths=paths, remove_zips=from_upload):
        return uploads.ingest_with_zips(index, paths, unpack_into, progress=progress, remove_zips=remove_zips)

    job = jobs.start_job(str(target_folder), f"Indexing into {target_folder.name}", work)
    st.session_state["library_job"] = job.key
    st.session_state["library_pending_target"] = target_folder.name
    common.set_active_index(target_folder.name)

job = jobs.get_job(st.session_state.get("library_job", ""))
if job is not None:
    if not job.finished:
        jobs.wait(job)
        st.rerun()
    library_view.show_report(job)

# --- the pages of the active index ----------------------------------------------------------------

active = common.active_index()
if active is not None:
    st.subheader(f"Pages of {common.md_escape(active[0])}")
    library_view.page_browser(active[1])
