"""How bench/data/pydoc/ was made (run once; the output is committed).

Source: the Debian package python3.11-doc 3.11.2-6+deb12u9 (``apt-get download python3.11-doc``;
``dpkg-deb -x``), the Python 3.11 documentation, licensed under the PSF License Agreement
(documentation) and Zero-Clause BSD (code examples): see bench/data/pydoc-LICENSE.md.
Each page's main content is converted to Markdown (headings, paragraphs, lists, code) so the
committed set stays small; the text itself is unchanged.

    python bench/data/extract_pydoc.py /tmp/pydoc/usr/share/doc/python3.11/html bench/data/pydoc
"""

from __future__ import annotations

import sys
from pathlib import Path

from bs4 import BeautifulSoup

PAGES = """
tutorial/appetite tutorial/interpreter tutorial/introduction tutorial/controlflow
tutorial/datastructures tutorial/modules tutorial/inputoutput tutorial/errors tutorial/classes
tutorial/stdlib tutorial/stdlib2 tutorial/venv tutorial/floatingpoint tutorial/interactive
tutorial/appendix
howto/annotations howto/descriptor howto/functional howto/ipaddress howto/logging howto/regex
howto/sockets howto/sorting howto/unicode howto/urllib2 howto/argparse
faq/design faq/general faq/library faq/installed faq/windows
library/getpass library/copy library/tomllib library/atexit library/fnmatch library/sched
library/glob library/secrets library/reprlib library/graphlib library/webbrowser library/shelve
library/fractions library/array library/heapq library/bisect library/gzip library/queue
library/abc library/uuid library/base64 library/textwrap library/timeit library/pprint
library/zoneinfo library/tempfile library/warnings library/struct library/weakref
library/smtplib library/traceback library/venv library/csv library/random library/functools
library/math library/json library/hashlib library/shutil library/statistics library/zipfile
library/threading library/itertools library/pickle library/pathlib
""".split()


def to_markdown(html: str) -> str:
    soup = BeautifulSoup(html, "html.parser")
    body = soup.find("div", attrs={"role": "main"}) or soup.find("div", class_="body")
    for tag in body.select("a.headerlink, script, style, div.related, div.sphinxsidebar"):
        tag.decompose()
    out: list[str] = []
    for el in body.find_all(["h1", "h2", "h3", "h4", "p", "pre", "li", "dt"]):
        if el.find_parent(["p", "pre", "li"]) is not None and el.name != "pre":
            continue
        if el.name == "pre" and el.find_parent("li") is not None:
            continue
        # Signatures (dt) and code keep their own spacing; prose is joined with spaces.
        text = el.get_text("" if el.name in {"pre", "dt"} else " ", strip=el.name != "pre")
        if not text.strip():
            continue
        if el.name in {"h1", "h2", "h3", "h4"}:
            out.append("#" * int(el.name[1]) + " " + " ".join(text.split()))
        elif el.name == "pre":
            out.append("```\n" + text.rstrip() + "\n```")
        elif el.name == "li":
            out.append("- " + " ".join(text.split()))
        else:
            out.append(" ".join(text.split()))
    return "\n\n".join(out) + "\n"


def main(src: str, dst: str) -> None:
    target = Path(dst)
    target.mkdir(parents=True, exist_ok=True)
    for page in PAGES:
        html = (Path(src) / f"{page}.html").read_text(encoding="utf-8")
        name = page.replace("/", "-") + ".md"
        (target / name).write_text(to_markdown(html), encoding="utf-8")
    # The licence page of the same documentation travels with the extract.
    license_html = (Path(src) / "license.html").read_text(encoding="utf-8")
    (target.parent / "pydoc-LICENSE.md").write_text(to_markdown(license_html), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
