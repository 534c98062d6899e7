"""Command-line argument helpers shared by the subcommands (npusim.cli and the modules that
register their own: bench, quantize, search): the default model, NAME=VALUE lists, --shape."""
from .errors import NpusimError


def default_model():
    import npusim_models
    return str(npusim_models.path(npusim_models.DEFAULT))


def parse_kv(items, what):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise NpusimError(f"{what} {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def parse_shapes(args):
    out = {}
    for name, v in parse_kv(args.shape, "--shape").items():
        try:
            out[name] = tuple(int(d) for d in v.split(","))
        except ValueError:
            raise NpusimError(f"--shape {name}={v}: expected comma-separated integers") from None
    return out
