"""``blendflag-shear plugins``: what is registered, what each implements, from where."""

from __future__ import annotations

from blendflag.commands.common import write_json
from blendflag.plugins import describe_plugins, get_detectors, get_flaggers, get_shear_engines


def register(cli) -> None:
    parser = cli.add_command(
        "plugins", help="list registered plugins and the hooks they implement", func=run
    )
    parser.add_argument(
        "--json", metavar="PATH", nargs="?", const="-", help="print JSON (or write it to PATH)"
    )


def run(args, pm) -> int:
    infos = describe_plugins(pm)
    flaggers = get_flaggers(pm)
    engines = get_shear_engines(pm)
    detectors = get_detectors(pm)
    data = {
        "plugins": [
            {
                "name": i.name,
                "hooks": list(i.hooks),
                "origin": i.origin,
                "distribution": i.distribution,
                "version": i.version,
            }
            for i in infos
        ],
        "flaggers": sorted(flaggers),
        "shear_engines": sorted(engines),
        "shear_engines_available": sorted(n for n, cls in engines.items() if cls.available()),
        "detectors": sorted(detectors),
        "detectors_available": sorted(n for n, cls in detectors.items() if cls.available()),
        "trainable_flaggers": sorted(n for n, cls in flaggers.items() if cls.trainable),
    }
    if args.json == "-":
        import json

        print(json.dumps(data, indent=2))
        return 0
    if args.json:
        write_json(data, args.json)
    width = max((len(i.name) for i in infos), default=4)
    for i in infos:
        print(f"{i.name:<{width}}  {i.origin:<11}  {', '.join(i.hooks)}")
    print(f"flaggers: {', '.join(sorted(flaggers)) or 'none'}")
    shown = [n if engines[n].available() else f"{n} (not installed)" for n in sorted(engines)]
    print(f"shear engines: {', '.join(shown) or 'none'}")
    shown = [n if detectors[n].available() else f"{n} (not installed)" for n in sorted(detectors)]
    print(f"detectors: {', '.join(shown) or 'none'}")
    return 0
