"""`python -m keras_harden` runs the `keras-harden` command line."""

import sys

from keras_harden.cli import main

if __name__ == "__main__":
    sys.exit(main())
