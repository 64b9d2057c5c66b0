#!/usr/bin/env python3
"""Strict schema validation of rendered Kubernetes manifests.

    scripts/kube-validate.py --kubernetes-version 1.37 RENDERED.yaml...

Built-in kinds are checked by kubernetes-validate (PyPI) against the
OpenAPI schemas of that Kubernetes version, strictly: an unknown field is an
error. Custom resources (cert-manager, CloudNativePG, the Prometheus
operator) are checked against the CRD schemas vendored under deploy/schemas/
(sources.txt), made strict the same way: every object schema that lists its
properties and does not say `x-kubernetes-preserve-unknown-fields` rejects
other properties, and `metadata` is checked as an ObjectMeta. A resource
whose kind has no schema is an error, never skipped.

Not checked here: CEL rules (`x-kubernetes-validations`) and the operators'
admission webhooks (e.g. cert-manager's cross-field rules), which need the
running cluster.

Prints one line per file with its resource count by kind and exits 1 on any
failure.
"""
import argparse
import collections
import copy
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "deploy" / "schemas"
OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def strict(schema):
    """A copy of an openAPIV3Schema that rejects unknown properties."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    schema.setdefault("properties", {})["metadata"] = {"$ref": OBJECT_META}
    return schema


def definitions(version):
    """kubernetes-validate's strict definitions (for ObjectMeta)."""
    files = kubernetes_validate.utils.importlib_resources.files("kubernetes_validate")
    path = files.joinpath(f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json")
    return json.loads(path.read_text())


class Validator:
    def __init__(self, version):
        self.version = version
        self.registry = Resource.from_contents(definitions(version)) @ Registry()
        self.custom = {}

    def custom_schema(self, group, version, kind):
        key = (group, version, kind)
        if key not in self.custom:
            path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
            if not path.is_file():
                self.custom[key] = None
            else:
                schema = strict(json.loads(path.read_text()))
                self.custom[key] = jsonschema.Draft202012Validator(schema, registry=self.registry)
        return self.custom[key]

    def check(self, doc):
        """None when valid, else the reason."""
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        group, _, version = api_version.rpartition("/")
        if group and (SCHEMAS / group).is_dir():
            validator = self.custom_schema(group, version, kind)
            if validator is None:
                return f"no vendored schema for {api_version} {kind} under deploy/schemas/"
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            if errors:
                e = errors[0]
                return f"{e.message} at {'.'.join(str(p) for p in e.absolute_path) or '(root)'}"
            return None
        try:
            kubernetes_validate.validate(doc, self.version, strict=True)
        except kubernetes_validate.ValidationError as e:
            return f"{e.message} at {'.'.join(str(p) for p in e.absolute_path) or '(root)'}"
        except kubernetes_validate.SchemaNotFoundError as e:
            return e.message
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True, help="e.g. 1.37")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    validator = Validator(args.kubernetes_version)
    failed = 0
    for name in args.files:
        kinds = collections.Counter()
        for doc in yaml.safe_load_all(pathlib.Path(name).read_text()):
            if not doc:
                continue
            kinds[doc.get("kind", "?")] += 1
            reason = validator.check(doc)
            if reason:
                failed += 1
                meta = doc.get("metadata") or {}
                print(f"FAIL {name}: {doc.get('kind')}/{meta.get('name')}: {reason}")
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        print(f"{name}: {sum(kinds.values())} resources against Kubernetes {args.kubernetes_version} ({summary})")
    if failed:
        print(f"{failed} resources failed validation")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
