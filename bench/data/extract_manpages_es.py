"""How bench/data/manpages-es/ was made (run once; the output is committed).

Six Spanish manual pages of GNU coreutils from Debian's ``manpages-es`` package (translations by
the manpages-l10n project, GPL-3+, as the coreutils pages themselves; see
bench/data/manpages-es-LICENSE.md), rendered to text with ``man`` and given Markdown headings:

    apt-get download manpages-es && dpkg-deb -x manpages-es_*.deb /tmp/manpages-es
    python bench/data/extract_manpages_es.py /tmp/manpages-es/usr/share/man/es/man1 bench/data/manpages-es
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PAGES = ("chmod", "df", "ln", "nohup", "timeout", "shred")


def render(page: Path) -> str:
    env = {**os.environ, "MANWIDTH": "2000", "LANG": "C.UTF-8"}
    text = subprocess.run(["man", "-E", "UTF-8", "-l", str(page)], env=env, capture_output=True,
                          text=True, check=True).stdout
    text = subprocess.run(["col", "-bx"], input=text, capture_output=True, text=True, check=True).stdout
    lines = text.splitlines()[1:-1]  # the running header and footer
    out = []
    for line in lines:
        if re.match(r"^[A-ZÁÉÍÓÚÑ][A-ZÁÉÍÓÚÑ ]+$", line):
            out.append(f"## {line.strip().capitalize()}")
        else:
            out.append(line.strip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def main(source: str, target: str) -> None:
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for name in PAGES:
        body = render(Path(source) / f"{name}.1.gz")
        (out / f"man-{name}.md").write_text(f"# {name}(1)\n\n{body}", encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
