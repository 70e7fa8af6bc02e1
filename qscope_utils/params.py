"""Notebook parameters as papermill passes them.

``papermill -p layers '[18]'`` passes the STRING ``"[18]"`` (``-p`` values are not parsed as
YAML); ``-y 'layers: [18]'`` or ``-r``/``-f`` pass a real list. Notebooks call :func:`as_list` on
every list-valued parameter so that both spellings work, and a wrong spelling gets an error that
names the fix. :func:`override_config` lets a notebook's ``config`` parameter (a YAML mapping)
set any field of its section config, so every paper-relevant field is reachable from papermill::

    papermill notebooks/05_safety_synthesis.ipynb out.ipynb -p profile paper \
        -y 'config: {natural_dataset_id: allenai/WildChat-1M, n_seed_per_cell: 500}'
"""
from __future__ import annotations

__all__ = ["as_list", "as_int_list", "given", "override_config"]


def as_list(value, name: str = "parameter") -> list | None:
    """None stays None; a list/tuple is copied; a scalar becomes a one-item list; a string is
    parsed as YAML (``"[18, 20]"``, ``"18"``, ``"en, ru"``)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        import yaml

        text = value.strip()
        if not text.startswith("["):
            text = f"[{text}]"
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{name}={value!r} is not a list; pass it as YAML, e.g. "
                             f"`papermill ... -y '{name}: [18, 20]'`") from e
        return list(parsed) if parsed is not None else []
    return [value]


def as_int_list(value, name: str = "parameter") -> list[int] | None:
    """:func:`as_list` with every item converted to int (layers, feature ids)."""
    out = as_list(value, name)
    if out is None:
        return None
    try:
        return [int(v) for v in out]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}={value!r} must be a list of integers, e.g. -y '{name}: [18, 20]'") from e


def given(**values) -> dict:
    """The keyword arguments that are not None (notebook parameters left at None mean "default")."""
    return {k: v for k, v in values.items() if v is not None}


def override_config(cfg, overrides=None, name: str = "config"):
    """``dataclasses.replace(cfg, **overrides)`` with checks: unknown field names get an error listing
    the fields; a list given for a tuple-valued field becomes a tuple. ``overrides`` may be a dict,
    a YAML string (``"{tau: 0.3}"``, as ``-p config ...`` passes it) or None."""
    import dataclasses

    if overrides is None:
        return cfg
    if isinstance(overrides, str):
        import yaml

        overrides = yaml.safe_load(overrides) or {}
    if not isinstance(overrides, dict):
        raise TypeError(f"{name} must be a mapping of field: value, e.g. -y '{name}: {{tau: 0.3}}'")
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise KeyError(f"{name}: {type(cfg).__name__} has no field(s) {unknown}; its fields are {sorted(fields)}")
    fixed = {k: tuple(v) if isinstance(v, list) and isinstance(getattr(cfg, k), tuple) else v
             for k, v in overrides.items()}
    return dataclasses.replace(cfg, **fixed)
