import sys

from lit_propulse.cli import main

if __name__ == "__main__":
    sys.exit(main())
