"""What `workbench plugins` shows: every plugin, policy, follow-up and preset, with origins.

One dict (`catalogue()`), printed as text or as JSON (`--format json`), so the
two can never disagree.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter

from workbench.discovery import Plugins
from workbench.policy import CONCERNS

TITLES = {"victim": "victim selectors", "reaper": "reaper policies", "vma_filter": "VMA filters",
          "userspace": "userspace OOM killers"}


def catalogue(plugins: Plugins) -> dict[str, Any]:
    reg = plugins.registry
    return {
        "plugins": [{**p, "origin": plugins.origin_of(p["name"]).to_json()}
                    for p in plugins.describe()],
        "broken": [{"name": b.name, "origin": b.origin.to_json(), "error": b.error,
                    **({"traceback": b.traceback} if b.traceback else {})}
                   for b in plugins.broken],
        "disabled": sorted(plugins.disabled),
        "policies": {c: [_policy(plugins, c, name, cls)
                         for name, cls in sorted(reg.policies[c].items())] for c in CONCERNS},
        "follow_ups": [{"name": f.name, "since": f.since, "commit": f.commit, "doc": f.doc,
                        "policies": f.policies, "options": f.options, "kernel": f.kernel,
                        "plugin": f.plugin} for f in reg.follow_ups.values()],
        "presets": [{"name": p.name, "doc": p.doc, **{c: getattr(p, c) for c in CONCERNS},
                     "follow_ups": list(p.follow_ups), "plugin": p.plugin}
                    for p in sorted(reg.presets.values(), key=lambda p: p.name)],
    }


def _policy(plugins: Plugins, concern: str, name: str, cls: type) -> dict[str, Any]:
    reg = plugins.registry
    plugin = reg.owner[concern, name]
    origin = plugins.origin_of(plugin)
    out: dict[str, Any] = {"name": name, "doc": first_paragraph(cls), "plugin": plugin,
                           "origin": origin.to_json()}
    if origin.kind == "distribution":
        out["distribution"], out["version"] = origin.dist, origin.version
    alias = next((b.name for b in cls.__mro__[1:] if getattr(b, "name", None)
                  in reg.policies[concern] and b.Options is cls.Options), None)
    own_hooks = any(k.startswith("workbench_") for k in vars(cls))
    if alias is not None and not own_hooks:
        out["alias_of"] = alias            # the same policy and options under a second name
    out["options"] = options(cls.Options)
    return out


def options(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Each option's name, type, default (as a config would write it) and help."""
    out = []
    for field, info in model.model_fields.items():
        entry = {"name": field, "type": type_name(info.annotation), "help": info.description or ""}
        if info.is_required():
            entry["required"] = True
        else:
            default = info.get_default(call_default_factory=True)
            try:
                adapter = TypeAdapter(Annotated[(info.annotation, *info.metadata)]
                                      if info.metadata else info.annotation)
                entry["default"] = adapter.dump_python(default, mode="json", warnings=False)
            except Exception:
                entry["default"] = default
            entry["default"] = _jsonable(entry["default"])
        out.append(entry)
    return out


def _jsonable(value: Any) -> Any:
    """value if strict JSON can hold it (no NaN or Infinity), else its str()."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return str(value)


def type_name(t: Any) -> str:
    """An annotation as a reader would write it: Duration | None, Literal['slot', 'lifo']."""
    if t is None or t is type(None):
        return "None"
    origin = typing.get_origin(t)
    if origin is typing.Annotated:
        return type_name(typing.get_args(t)[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(t))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(t))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(t))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(t, "__name__", str(t).replace("typing.", ""))


def first_paragraph(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split("\n\n")[0].split())


def print_text(data: dict[str, Any], write: Any = print) -> None:
    write("plugins:")
    for p in data["plugins"]:
        write(f"  {p['name']:<12} {p['module']:<32} {p['dist'] or p.get('file', '')}")
    for b in data["broken"]:
        write(f"  {b['name']:<12} NOT LOADED: {b['error']}")
    for concern in CONCERNS:
        write(f"{TITLES[concern]}:")
        for pol in data["policies"][concern]:
            write(f"  {pol['name']:<12} {pol['doc']}  [{_origin(pol)}]")
            if "alias_of" in pol:
                continue
            for o in pol["options"]:
                default = "required" if o.get("required") else json.dumps(o["default"])
                write(f"  {'':<12}   option {o['name']} = {default} ({o['type']}): {o['help']}")
    write("follow-ups (applied in this order):")
    for f in data["follow_ups"]:
        write(f"  {f['name']:<30} {f['since']:<5} {f['doc']}  [{f['commit']}]")
    write("presets:")
    for p in data["presets"]:
        write(f"  {p['name']:<12} {p['doc']}")
        write(f"  {'':<12}   base: " + " ".join(f"{c}={p[c]}" for c in CONCERNS))
        write(f"  {'':<12}   follow-ups: {', '.join(p['follow_ups']) or 'none'}")


def _origin(pol: dict[str, Any]) -> str:
    if "distribution" in pol:
        return f"{pol['plugin']}, {pol['distribution']} {pol['version']}"
    return pol["plugin"] if pol["origin"]["kind"] != "file" else \
        f"{pol['plugin']}, {pol['origin']['path']}"
