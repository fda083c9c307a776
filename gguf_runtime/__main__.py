"""`python -m gguf_runtime` = the `gguf-runtime` command."""

import sys

from .cli import main

sys.exit(main())
