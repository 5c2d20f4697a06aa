"""The channel catalogue: every variable wxbench knows, with its names in WB1 and WB2, its units and description.

A *channel* is one 2-D field: a pressure-level variable at one level ("z500": geopotential at 500 hPa) or a
single-level variable ("t2m"). Everything that names channels (the WB1 and WB2 readers, the forecast export,
the leaderboard and plots, the embedded-data simulator) looks them up here, so adding a variable is one
line in :data:`VARIABLES`. An unknown channel is a :class:`~wxbench.errors.DataError` naming it.

Units are written as ERA5 / WB2 store attributes write them ("m**2 s**-2"); :func:`units_label` turns them
into a table heading ("m²/s²").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DataError

__all__ = [
    "CHANNEL_ALIASES", "PRESSURE_LEVELS", "VARIABLES", "ChannelSpec", "Variable", "canonical_channel",
    "parse_channel", "parse_channels", "units_label", "wb2_location",
]

#: the 13 WB1/WB2 pressure levels (hPa); other levels are accepted if a file has them
PRESSURE_LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)


@dataclass(frozen=True)
class Variable:
    """One physical variable and its names in both layouts."""

    short: str                 # internal short name ("z", "t2m"); a pressure-level channel appends the level
    wb1_name: str | None       # WB1 folder / file stem ("geopotential", "2m_temperature"); None: not in WB1
    wb1_var: str | None        # netCDF variable in the WB1 files ("z", "t2m")
    wb2_name: str | None       # WB2 long name, the zarr variable ("geopotential", "total_precipitation_6hr")
    pressure_level: bool
    units: str                 # as the ERA5 / WB2 files write them ("m**2 s**-2")
    description: str           # what it is, for humans and the files' long_name attribute
    wb1_note: str = ""         # why the variable cannot be read from WB1 (when wb1_name is None)


def _v(short: str, wb1: str | None, wb1_var: str | None, wb2: str | None, pl: bool, units: str, description: str,
       note: str = "") -> Variable:
    return Variable(short, wb1, wb1_var, wb2, pl, units, description, note)


#: short variable name -> its record; one line per variable
VARIABLES: dict[str, Variable] = {v.short: v for v in [
    # pressure-level variables (channel = short + level in hPa)
    _v("z", "geopotential", "z", "geopotential", True, "m**2 s**-2", "geopotential"),
    _v("t", "temperature", "t", "temperature", True, "K", "temperature"),
    _v("u", "u_component_of_wind", "u", "u_component_of_wind", True, "m s**-1", "u component of wind"),
    _v("v", "v_component_of_wind", "v", "v_component_of_wind", True, "m s**-1", "v component of wind"),
    _v("q", "specific_humidity", "q", "specific_humidity", True, "kg kg**-1", "specific humidity"),
    _v("r", "relative_humidity", "r", "relative_humidity", True, "%", "relative humidity"),
    _v("w", None, None, "vertical_velocity", True, "Pa s**-1", "vertical velocity",
       "WB1 has no vertical velocity"),
    _v("vo", "vorticity", "vo", "vorticity", True, "s**-1", "vorticity"),
    _v("pv", "potential_vorticity", "pv", "potential_vorticity", True, "K m**2 kg**-1 s**-1",
       "potential vorticity"),
    # single-level variables (channel = short)
    _v("t2m", "2m_temperature", "t2m", "2m_temperature", False, "K", "2 metre temperature"),
    _v("u10", "10m_u_component_of_wind", "u10", "10m_u_component_of_wind", False, "m s**-1",
       "10 metre u wind component"),
    _v("v10", "10m_v_component_of_wind", "v10", "10m_v_component_of_wind", False, "m s**-1",
       "10 metre v wind component"),
    _v("msl", "mean_sea_level_pressure", "msl", "mean_sea_level_pressure", False, "Pa", "mean sea level pressure"),
    _v("tcc", "total_cloud_cover", "tcc", "total_cloud_cover", False, "(0 - 1)", "total cloud cover"),
    _v("tisr", "toa_incident_solar_radiation", "tisr", "toa_incident_solar_radiation", False, "J m**-2",
       "TOA incident solar radiation (1 h accumulation)"),
    _v("tp", None, None, "total_precipitation_6hr", False, "m", "total precipitation (6 h accumulation)",
       "WB1 stores hourly precipitation (total_precipitation/…, variable 'tp'); the internal 'tp' is the 6-hour "
       "accumulation (WB2 'total_precipitation_6hr'), which this reader does not derive from hourly data"),
]}


@dataclass(frozen=True)
class ChannelSpec:
    """A parsed channel: internal name, variable and pressure level (None for single-level variables)."""

    name: str
    variable: Variable
    level: int | None

    @property
    def units(self) -> str:
        return self.variable.units

    @property
    def description(self) -> str:
        """ "geopotential at 500 hPa", "2 metre temperature"."""
        v = self.variable
        return v.description if self.level is None else f"{v.description} at {self.level} hPa"


def _build_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for v in VARIABLES.values():
        if v.pressure_level:
            for lev in PRESSURE_LEVELS:
                ch = f"{v.short}{lev}"
                for long in {v.wb1_name, v.wb2_name} - {None}:
                    aliases[f"{long}_{lev}"] = ch            # "geopotential_500" (the WB1 folder name)
                    aliases[f"{long}_{lev}hpa"] = ch         # "geopotential_500hPa" (the WB1 file stem)
        else:
            for long in {v.wb1_name, v.wb2_name} - {None}:
                aliases[long] = v.short                       # "2m_temperature", "total_precipitation_6hr"
    aliases["2t"] = "t2m"                                    # ECMWF paramId short names
    aliases["10u"] = "u10"
    aliases["10v"] = "v10"
    return aliases


#: long spellings -> internal channel name ("geopotential_500" -> "z500", "2m_temperature" -> "t2m");
#: matched case-insensitively by :func:`canonical_channel`
CHANNEL_ALIASES: dict[str, str] = _build_aliases()

_PL_RE = re.compile(r"^([a-z]+)(\d+)$")


def canonical_channel(name: str) -> str:
    """The internal name of a channel given in any accepted spelling ("Z500", "geopotential_500" -> "z500")."""
    return parse_channel(name).name


def parse_channel(name: str) -> ChannelSpec:
    """Parse an internal channel name (or an alias) into variable and level; DataError when unknown."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"channel {name!r}: expected a non-empty string such as 'z500' or 't2m'")
    key = name.strip().lower()
    key = CHANNEL_ALIASES.get(key, key)
    var = VARIABLES.get(key)
    if var is not None:
        if var.pressure_level:
            raise DataError(f"channel {name!r}: {var.description} is a pressure-level variable; name the level in "
                            f"hPa, e.g. '{var.short}500'")
        return ChannelSpec(key, var, None)
    m = _PL_RE.match(key)
    if m and m.group(1) in VARIABLES and VARIABLES[m.group(1)].pressure_level:
        level = int(m.group(2))
        if level <= 0 or m.group(2).startswith("0"):
            raise DataError(f"channel {name!r}: bad pressure level {m.group(2)!r}")
        return ChannelSpec(f"{m.group(1)}{level}", VARIABLES[m.group(1)], level)
    pl = ", ".join(v.short for v in VARIABLES.values() if v.pressure_level)
    sl = ", ".join(v.short for v in VARIABLES.values() if not v.pressure_level)
    raise DataError(f"unknown channel {name!r}: expected a pressure-level variable ({pl}) followed by a level in "
                    f"hPa (e.g. 'z500', 't850'), or a single-level variable ({sl})")


def parse_channels(channels: Sequence[str] | str) -> list[ChannelSpec]:
    """Parse a list of channels; DataError for an empty list or a channel requested twice (in any spelling)."""
    if isinstance(channels, str):
        channels = [channels]
    specs = [parse_channel(c) for c in channels]
    if not specs:
        raise DataError("no channels requested")
    seen: dict[str, str] = {}
    for given, spec in zip(channels, specs):
        if spec.name in seen:
            raise DataError(f"channel {given!r} requested twice (as {seen[spec.name]!r} and {given!r})")
        seen[spec.name] = given
    return specs


def wb2_location(channel: str) -> tuple[str, int | None]:
    """WB2 zarr variable and level of ``channel`` ("z500" -> ("geopotential", 500))."""
    spec = parse_channel(channel)
    if spec.variable.wb2_name is None:
        raise DataError(f"channel {spec.name!r} is not available in the WB2 layout")
    return spec.variable.wb2_name, spec.level


_UNIT_TOKEN = re.compile(r"^([A-Za-z%]+)(?:\*\*(-?\d+))?$")
_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def units_label(channel: str) -> str:
    """The channel's units for a table heading or axis label: "m**2 s**-2" -> "m²/s²", "m s**-1" -> "m/s".

    Units that are not a product of powers ("(0 - 1)") are returned as written. DataError for an unknown channel.
    """
    units = parse_channel(channel).units
    numerator: list[str] = []
    denominator: list[str] = []
    for token in units.split():
        m = _UNIT_TOKEN.match(token)
        if m is None:
            return units
        power = int(m.group(2) or 1)
        text = m.group(1) + (str(abs(power)).translate(_SUPERSCRIPTS) if abs(power) != 1 else "")
        (numerator if power > 0 else denominator).append(text)
    top = " ".join(numerator) or "1"
    if not denominator:
        return top
    bottom = denominator[0] if len(denominator) == 1 else f"({' '.join(denominator)})"
    return f"{top}/{bottom}"
