"""A Sphinx extension that keeps built pages free of requests to remote hosts.

Jupyter Book 1 always loads sphinx-thebe, which writes the unpkg.com address of
thebe into every page (it is fetched only when a reader starts a live kernel,
which this book does not offer). This drops those scripts, and drops a second
copy of a script already on the page (MathJax is otherwise added twice).
"""

from __future__ import annotations


def _keep(script) -> bool:
    filename = getattr(script, "filename", None) or str(script)
    body = getattr(script, "attributes", {}).get("body", "")
    return "thebe" not in (filename or "") and "unpkg.com" not in body


def _filter_scripts(app, pagename, templatename, context, doctree) -> None:
    seen, kept = set(), []
    for script in context.get("script_files", []):
        filename = getattr(script, "filename", None)
        if not _keep(script) or (filename and filename in seen):
            continue
        if filename:
            seen.add(filename)
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _filter_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
