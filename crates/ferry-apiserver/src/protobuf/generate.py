#!/usr/bin/env python3
"""Writes schema.rs (beside this file): the Kubernetes protobuf messages Ferry decodes and
encodes, with what Go's encoding/json needs on top of the .proto (JSON name, pointer,
omitempty, inline), taken from the types.go struct tags of the same release.

Usage: generate.py API APIMACHINERY
  API           a checkout of k8s.io/api at the tag named in TAG below
  APIMACHINERY  a checkout of k8s.io/apimachinery at the same tag
"""
import os
import re
import sys

TAG = "v0.33.9"  # k8s.io/api e543e167c841, k8s.io/apimachinery 633600f57150
GROUPS = ["core", "apps", "batch", "rbac", "coordination", "discovery", "authentication",
          "authorization"]
MACHINERY = ["pkg/apis/meta/v1", "pkg/runtime", "pkg/runtime/schema", "pkg/util/intstr",
             "pkg/api/resource"]
SCALARS = {"string": "String", "bytes": "Bytes", "bool": "Bool", "int32": "Int32",
           "int64": "Int64"}


def strip(text):
    return "\n".join(l for l in text.splitlines() if not l.strip().startswith("//"))


def parse_proto(path):
    text = strip(open(path).read())
    package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
    messages = {}
    for m in re.finditer(r"^message (\w+) \{(.*?)^\}", text, re.M | re.S):
        fields = []
        for line in m.group(2).splitlines():
            line = line.strip()
            if not line:
                continue
            f = re.fullmatch(r"(optional|repeated) ([\w.]+) (\w+) = (\d+);", line)
            g = re.fullmatch(r"map<string, ([\w.]+)> (\w+) = (\d+);", line)
            if f:
                fields.append((int(f.group(4)), f.group(3), f.group(2), f.group(1) == "repeated", False))
            elif g:
                fields.append((int(g.group(3)), g.group(2), g.group(1), False, True))
            else:
                sys.exit(f"{path}: message {m.group(1)}: cannot read {line!r}")
        messages[f"{package}.{m.group(1)}"] = (package, fields)
    return messages


def parse_go(path, package):
    """{message: {number: (json_name, pointer, omitempty, inline)}} from struct tags."""
    out = {}
    struct = None
    for line in open(path):
        s = line.strip()
        m = re.match(r"type (\w+) struct \{", s)
        if m:
            struct = f"{package}.{m.group(1)}"
            out.setdefault(struct, {})
            continue
        if s == "}":
            struct = None
            continue
        if struct is None or s.startswith("//") or "`" not in s:
            continue
        decl, tags = s.split("`", 1)
        j = re.search(r'json:"([^"]*)"', tags)
        p = re.search(r'protobuf:"([^"]*)"', tags)
        if not j or not p:
            continue
        parts = decl.split()
        gotype = parts[-1]
        opts = j.group(1).split(",")
        number = int(p.group(1).split(",")[1])
        out[struct][number] = (opts[0], gotype.startswith("*"),
                               "omitempty" in opts[1:] or "omitzero" in opts[1:],
                               opts[0] == "" and "inline" in opts[1:])
    return out


def resolve(package, ty, known):
    if ty in SCALARS:
        return None
    name = ty[1:] if ty.startswith(".") else f"{package}.{ty}"
    if name not in known:
        sys.exit(f"unknown message {name}")
    return name


def main():
    api, machinery = sys.argv[1], sys.argv[2]
    messages, go = {}, {}
    for g in GROUPS:
        messages.update(parse_proto(os.path.join(api, g, "v1", "generated.proto")))
        go.update(parse_go(os.path.join(api, g, "v1", "types.go"), f"k8s.io.api.{g}.v1"))
    for p in MACHINERY:
        messages.update(parse_proto(os.path.join(machinery, p, "generated.proto")))
    go.update(parse_go(os.path.join(machinery, "pkg/apis/meta/v1/types.go"),
                       "k8s.io.apimachinery.pkg.apis.meta.v1"))
    lines = []
    for name in sorted(messages):
        package, fields = messages[name]
        tags = go.get(name)
        rows = []
        for number, pname, ty, repeated, is_map in sorted(fields):
            target = resolve(package, ty, messages)
            if is_map:
                t = f"Ty::MapMessage({target!r})" if target else f"Ty::Map{SCALARS[ty]}"
            else:
                t = f"Ty::Message({target!r})" if target else f"Ty::{SCALARS[ty]}"
            # Without Go tags (runtime, intstr, resource, and the special meta types)
            # present fields are kept as they are, zero or not.
            json_name, pointer, omitempty, inline = (tags or {}).get(number, (pname, True, False, False))
            flags = [f for f, on in (("POINTER", pointer), ("OMITEMPTY", omitempty), ("INLINE", inline)) if on]
            rows.append(f'    F {{ number: {number}, json: "{json_name}", ty: {t}, repeated: {str(repeated).lower()}, flags: {"|".join(flags) or "0"} }},')
        t = "\n".join(rows)
        lines.append(f'  M {{ name: "{name}", fields: &[\n{t}\n  ] }},'.replace("'", '"'))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.rs")
    with open(out, "w") as f:
        f.write(f"""//! Generated by generate.py from k8s.io/api and k8s.io/apimachinery {TAG}: do not edit.
//! Every message of the .proto files of {", ".join(GROUPS)} (v1)
//! and of apimachinery, with the JSON name, Go pointer, omitempty and inline flags of the Go
//! struct field behind each.
//! Over 600 lines because it is a generated table ({len(messages)} messages).

use super::wire::{{Field as F, INLINE, Message as M, OMITEMPTY, POINTER, Ty}};

#[rustfmt::skip]
pub(super) static MESSAGES: &[M] = &[
""")
        f.write("\n".join(lines))
        f.write("\n];\n")
    print(f"{len(messages)} messages -> {out}", file=sys.stderr)


main()
