"""``cvexport list``: the registered models, then torchvision's builders (one line per family)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("list", help="list the registered models and the torchvision builders cvexport builds")
    p.set_defaults(func=run)


def run(args) -> int:
    from cvexport.registry import get_spec, list_models, torchvision_models
    from cvexport.torchvision_zoo import families

    for name in list_models():
        spec = get_spec(name)
        print(f"{name:<12} {spec.task:<16} {spec.description}")
    builders = torchvision_models()
    if builders:
        # After a blank line, so the first block stays one model per line.
        print(f"\ntorchvision builders ({len(builders)}; your weights: 'cvexport build NAME --weights FILE.pth'):")
        for task in sorted(set(builders.values())):
            for family, names in families(n for n, t in builders.items() if t == task).items():
                print(f"  {task:<16} {family + ':':<14} {' '.join(names)}")
    return 0
