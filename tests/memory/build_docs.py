"""Builds docs.jsonl, the documents of the memory recall test, from public text that no
one here wrote: the docstrings of CPython's standard-library modules (PSF licence), cut
at 1,500 characters. The queries in queries.json were written by hand, one per module,
as a user would ask, without the module's name; each is labelled with the module whose
docstring answers it. Re-run with `python3 tests/memory/build_docs.py` (the output
depends on the Python version, recorded in each line)."""
import importlib, json, pathlib, sys

here = pathlib.Path(__file__).parent
queries = json.loads((here / "queries.json").read_text())
version = ".".join(map(str, sys.version_info[:3]))
with open(here / "docs.jsonl", "w") as out:
    for module in sorted({q["module"] for q in queries}):
        doc = (importlib.import_module(module).__doc__ or "").strip()
        out.write(json.dumps({"id": module, "text": doc[:1500], "python": version}) + "\n")
