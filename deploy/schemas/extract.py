#!/usr/bin/env python3
"""Turns CustomResourceDefinition YAML files into the JSON schemas that
scripts/kube-validate.py checks custom resources against.

    deploy/schemas/extract.py CRD.yaml...

For every served version of every CRD it writes
deploy/schemas/<group>/<kind>_<version>.json: the CRD's openAPIV3Schema,
unchanged. Strictness (no unknown fields) is added by the validator, as the
API server's strict field validation does, not stored here. sources.txt says
which release each file came from.
"""
import json
import pathlib
import sys

import yaml

OUT = pathlib.Path(__file__).resolve().parent


def main(paths):
    for path in paths:
        for crd in yaml.safe_load_all(pathlib.Path(path).read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"].lower()
            for version in crd["spec"]["versions"]:
                if not version.get("served", False):
                    continue
                schema = version["schema"]["openAPIV3Schema"]
                target = OUT / group / f"{kind}_{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(f"wrote {target.relative_to(OUT)}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
