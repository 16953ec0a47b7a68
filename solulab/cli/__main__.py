"""``python -m solulab.cli``: the same ``main()`` as the installed ``solulab``."""

from solulab.cli import main

main()
