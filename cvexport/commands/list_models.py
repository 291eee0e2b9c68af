"""``cvexport list``: the registered models."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("list", help="list the registered models")
    p.set_defaults(func=run)


def run(args) -> int:
    from cvexport.registry import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        print(f"{name:<12} {spec.task:<16} {spec.description}")
    return 0
