"""``python -m kakusan.cli`` (what ``accelerate launch -m kakusan.cli`` runs)."""
import sys

from . import main

sys.exit(main())
