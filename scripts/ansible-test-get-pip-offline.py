"""Stand-in for the get-pip.py that ansible-test downloads from a host this network cannot reach.

ansible-test runs this file (cached under ~/.ansible/test/cache/) to put pip
into each small venv it makes. Python's bundled pip is enough; the packages it
is then asked for come from the configured package index as usual.
"""

import ensurepip
import subprocess
import sys

DROPPED = {"--no-setuptools", "--no-wheel"}  # flags of get-pip.py that pip install does not know


def main() -> None:
    ensurepip.bootstrap(upgrade=True)
    args = [arg for arg in sys.argv[1:] if arg not in DROPPED]
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args])


if __name__ == "__main__":
    main()
