"""requirements.lock, the image's hashed install set, holds exactly requirements.txt's pins, each with a sha256."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def _name(name: str) -> str:
    """The PEP 503 normalised project name, so `Prometheus_Client` and `prometheus-client` are the same."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[str]:
    """The logical lines of a requirements file: comments dropped, backslash continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in requirement_lines(path):
        match = PIN.match(line.split()[0])
        assert match, f"{path.name}: not a name==version pin: {line!r}"
        found[_name(match[1])] = match[2]
    return found


def test_lock_has_exactly_the_pins_of_requirements_txt() -> None:
    """Every name==version of requirements.txt is in requirements.lock, and nothing else (`make lock` writes it)."""
    assert pins(ROOT / "requirements.lock") == pins(ROOT / "requirements.txt")


def test_every_pin_in_the_lock_has_a_sha256() -> None:
    """Each requirement line carries at least one --hash=sha256:<64 hex>, which pip install --require-hashes needs."""
    for line in requirement_lines(ROOT / "requirements.lock"):
        pin, *options = line.split()
        assert options, f"{pin} has no hash"
        for option in options:
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", option), f"{pin}: {option}"


def test_requirements_txt_has_no_hashes() -> None:
    """requirements.txt stays plain pins: setuptools reads it for the package's dependencies and cannot read --hash."""
    assert "--hash" not in (ROOT / "requirements.txt").read_text()
