"""beets plugin: transcode library items at the lowest bitrate that meets a MOS target.

beets' convert plugin transcodes at one fixed setting (``max_bitrate``); this one lets
ratecontrol pick the bitrate per track by measured quality::

    plugins: ratecontrol
    ratecontrol:
        dest: ~/music-opus
        codec: opus            # a ratecontrol preset name or a preset YAML file
        target_mos: 4.2        # ViSQOL MOS the output must meet
        formats:               # per-codec settings (override the ones above)
            opus: {target_mos: 4.2}
            mp3-vbr: {target_mos: 4.0, max_kbps: 256}

    beet rcconvert artist:Bach --target-mos 4.3 --codec opus --dest ~/music-opus

Outputs follow the library's path formats (``paths:``, or ``ratecontrol.paths``) under
``dest`` with the codec's extension, and get the item's tags from the database (as
convert's ``write_metadata``). Each item records what was done as flexible attributes
(``rc_codec``, ``rc_target``, ``rc_rung``, ``rc_kbps``, ``rc_mos``, ``rc_path``,
``rc_settings``: the latest output), so ``beet ls rc_mos:..4`` works, and
``rc_outputs`` keeps one record per output file (destination and codec), so a second
run, to this destination or after another one, skips items whose output exists and
was made with the same settings.

One file per item: a path that is a library item's own file, another item's output,
or taken by an earlier item of the run (untagged items share their path-format path)
goes to ``name.1.ext``, ``name.2.ext``, ... as beets' own moves do, and the item keeps
that name on later runs. ``--force`` replaces only this item's output or a stray file,
never a library item's file or another item's output. ratecontrol writes through a temp
file and its publish rule, so a killed run leaves no partial output and a file that
appears at the destination during an encode is never replaced. A ratecontrol error on one
item is one line and the run goes on; the command fails at the end if any item failed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from beets import ui, util
from beets.dbcore import types
from beets.plugins import BeetsPlugin

try:  # beets >= 2.4
    from beets.util.pathformats import get_path_formats
except ImportError:  # older beets 2.x
    from beets.ui import get_path_formats

#: the flexible attributes this plugin writes (one prefix, so ``beet modify`` can drop them)
ATTRS = ("rc_codec", "rc_target", "rc_rung", "rc_kbps", "rc_mos", "rc_path", "rc_settings", "rc_outputs")

#: per-codec keys a ``formats: {codec: {...}}`` entry may set
FORMAT_KEYS = ("target_mos", "max_kbps", "margin_mos", "best_effort", "pool", "scorer")


class RatecontrolPlugin(BeetsPlugin):
    item_types = {
        "rc_target": types.Float(2),
        "rc_kbps": types.Float(1),
        "rc_mos": types.Float(2),
    }

    def __init__(self) -> None:
        super().__init__()  # name "ratecontrol": config under ``ratecontrol:``
        self.config.add({
            "dest": None,
            "codec": "opus",
            "target_mos": 4.2,
            "formats": {},
            "scorer": None,
            "pool": None,
            "max_kbps": None,
            "margin_mos": None,
            "best_effort": False,
            "cache": True,
            "step_down": True,
            "write_metadata": True,
            "id3v23": "inherit",
        })

    # -- command ---------------------------------------------------------------------

    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("rcconvert", help="transcode at the lowest bitrate that meets a MOS target")
        cmd.parser.add_option("-t", "--target-mos", dest="target_mos", type="float", default=None,
                              help="ViSQOL MOS the outputs must meet (default: config)")
        cmd.parser.add_option("-c", "--codec", dest="codec", default=None,
                              help="ratecontrol preset name or preset YAML file (default: config)")
        cmd.parser.add_option("-d", "--dest", dest="dest", default=None, help="destination folder")
        cmd.parser.add_option("-f", "--force", dest="force", action="store_true", default=False,
                              help="re-encode items even when done with the same settings")
        cmd.parser.add_option("-p", "--pretend", dest="pretend", action="store_true", default=False,
                              help="show what would be encoded, write nothing")
        cmd.parser.add_album_option()
        cmd.func = self.rcconvert
        return [cmd]

    def rcconvert(self, lib, opts, args) -> None:
        settings = self.settings(opts)
        items = [i for a in lib.albums(args) for i in a.items()] if opts.album else list(lib.items(args))
        if not items:
            self._log.error("Empty query result.")
            return
        plan = self.plan(lib, items, settings)
        done = skipped = 0
        failed: list[str] = []
        for item in items:
            state = self.convert_item(item, settings, opts.force, opts.pretend, planned=plan[item.id])
            if state in ("done", "pretend"):
                done += 1
            elif state == "skipped":
                skipped += 1
            else:
                failed.append(state)
        ui.print_(f"rcconvert: {done} {'to encode' if opts.pretend else 'encoded'}, {skipped} skipped, "
                  f"{len(failed)} failed ({settings['codec']} at MOS {settings['target_mos']:g})")
        if failed:
            raise ui.UserError(f"rcconvert: {len(failed)} of {len(items)} items failed")

    # -- destinations ------------------------------------------------------------------

    def plan(self, lib, items, settings) -> dict:
        """item id -> (output path, wanted path, why renamed or ""): one file per item.

        The wanted path is the path formats' (``destination``). It is given up, as
        beets' own moves do (``util.unique_path``: ``name.1.ext``, ``name.2.ext``...),
        when it is a library item's own file, another item's rcconvert output (its
        ``rc_outputs``), or taken by an earlier item of this run. An item keeps the name
        it was given before for the same wanted path, so reruns find their files."""
        library_files: set[bytes] = set()
        owners: dict[bytes, int] = {}
        for other in lib.items():
            library_files.add(_norm(other.path))
            for path in _records(other):
                owners.setdefault(_norm(os.fsencode(path)), other.id)
        taken: dict[bytes, int] = {}
        plan = {}
        for item in items:
            wanted = self.destination(item, settings)
            before = [os.fsencode(p) for p, r in _records(item).items() if r.get("wanted") == os.fsdecode(wanted)]
            base, ext = os.path.splitext(wanted)
            why = ""
            for cand in _candidates(before, wanted, base, ext):
                n = _norm(cand)
                if n in library_files:
                    why = why or "a library item's own file"
                elif owners.get(n, item.id) != item.id:
                    why = why or "another item's rcconvert output"
                elif taken.get(n, item.id) != item.id:
                    why = why or "another item of this run"
                else:
                    break
            taken[n] = item.id
            plan[item.id] = (cand, wanted, why if cand != wanted else "")
        return plan

    # -- settings ----------------------------------------------------------------------

    def settings(self, opts) -> dict:
        """Command-line flags over ``formats.<codec>`` over the top-level config."""
        import ratecontrol
        from ratecontrol.contract import check_target_mos

        codec = opts.codec or self.config["codec"].as_str()
        if codec == "auto":
            raise ui.UserError("rcconvert: codec 'auto' is not supported (the destination's extension "
                               "must be known before encoding); name a preset")
        try:
            preset = ratecontrol.load_preset(codec)
        except ratecontrol.RatecontrolError as exc:
            raise ui.UserError(f"rcconvert: {exc}") from None
        per = self.config["formats"][codec].get() if codec in (self.config["formats"].get() or {}) else {}
        per = per or {}
        if not isinstance(per, dict):
            raise ui.UserError(f"rcconvert: ratecontrol.formats.{codec} must be a mapping of settings, got {per!r}")
        unknown = set(per) - set(FORMAT_KEYS)
        if unknown:
            raise ui.UserError(f"rcconvert: unknown key(s) in ratecontrol.formats.{codec}: "
                               f"{', '.join(sorted(unknown))} (allowed: {', '.join(FORMAT_KEYS)})")

        def pick(key):
            return per[key] if key in per else self.config[key].get()

        target = opts.target_mos if opts.target_mos is not None else pick("target_mos")
        try:
            target = check_target_mos(target)
        except ratecontrol.RatecontrolError as exc:
            raise ui.UserError(f"rcconvert: {exc}") from None
        dest = opts.dest or self.config["dest"].get()
        if not dest:
            raise ui.UserError("rcconvert: no destination set (--dest or ratecontrol.dest)")
        fields = {k: pick(k) for k in ("scorer", "pool", "max_kbps", "margin_mos", "best_effort")}
        fields = {k: v for k, v in fields.items() if v is not None}
        fields["cache"] = bool(self.config["cache"].get())
        # not in ``key``: with or without it an output met the target by its own check, so
        # turning it off (less CPU) does not re-encode items already done
        fields["step_down"] = self.config["step_down"].get()
        try:
            options = ratecontrol.Options(**fields)
        except ratecontrol.RatecontrolError as exc:
            raise ui.UserError(f"rcconvert: {exc}") from None
        # what decides the output: a change in any of these re-encodes an item
        key = f"{preset.name}@{target:g}/pool={options.pool}/scorer={fields.get('scorer', 'default')}"
        for k in ("max_kbps", "margin_mos"):
            if k in fields:
                key += f"/{k}={fields[k]:g}"
        if fields.get("best_effort"):
            key += "/best_effort"
        paths = self.config["paths"] if self.config["paths"].exists() else None
        return {
            "codec": codec, "preset": preset, "target_mos": target, "options": options, "key": key,
            "dest": util.bytestring_path(os.path.expanduser(str(dest))),
            "path_formats": get_path_formats(paths) if paths is not None else None,
        }

    # -- one item ----------------------------------------------------------------------

    def destination(self, item, settings) -> bytes:
        """Where the item goes under dest: the path formats, with the codec's extension."""
        ext = settings["preset"].extension.lstrip(".")
        try:
            return item.destination(basedir=settings["dest"], path_formats=settings["path_formats"], extension=ext)
        except TypeError:  # beets before ``extension=``: replace it, as convert did then
            dest = item.destination(basedir=settings["dest"], path_formats=settings["path_formats"])
            return os.path.splitext(dest)[0] + b"." + ext.encode()

    def convert_item(self, item, settings, force: bool = False, pretend: bool = False, planned=None) -> str:
        """Encode one item; "done", "skipped", "pretend", or the one-line failure message.

        ``planned``: the item's entry of ``plan`` (computed for the item alone if not given)."""
        import ratecontrol

        dest, wanted, why = planned or self.plan(item._db, [item], settings)[item.id]
        shown = util.displayable_path(dest)
        records = _records(item)
        ours = records.get(os.fsdecode(dest))
        exists = os.path.lexists(dest)
        if exists and not force:
            if ours is not None and ours.get("settings") == settings["key"]:
                self._log.info("skipping {} (done with the same settings)", shown)
                return "skipped"
            if ours is None:
                msg = f"rcconvert: {shown} exists and was not written by rcconvert for this item; --force replaces it"
                ui.print_(msg)
                return msg
        if why:
            ui.print_(f"rcconvert: {util.displayable_path(wanted)} is {why}: writing {shown}")
        if pretend:
            ui.print_(f"{util.displayable_path(item.path)} -> {shown}")
            return "pretend"
        self._log.info("encoding {} -> {}", util.displayable_path(item.path), shown)
        folder = Path(os.fsdecode(dest)).parent
        made = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            util.mkdirall(dest)
            # replace only the file found now (ours, or with --force a stray one): one that
            # appears during the encode is never replaced (ratecontrol's publish rule)
            res = ratecontrol.encode(os.fsdecode(item.path), os.fsdecode(dest), target_mos=settings["target_mos"],
                                     codec=settings["preset"], options=settings["options"], overwrite=exists)
        except (ratecontrol.RatecontrolError, OSError) as exc:
            for p in made:  # no empty folders left for a failed item (deepest first)
                try:
                    p.rmdir()
                except OSError:
                    break
            msg = f"rcconvert: failed {util.displayable_path(item.path)}: {exc}"
            ui.print_(msg)
            return msg
        if self.config["write_metadata"].get(bool):
            id3v23 = self.config["id3v23"].as_choice([True, False, "inherit"])
            item.try_write(path=dest, id3v23=None if id3v23 == "inherit" else id3v23)
        # one output per wanted path: an older name for it (a file shared by several items
        # before there were records per output) is no longer this item's
        records = {p: r for p, r in records.items() if r.get("wanted") != os.fsdecode(wanted)}
        records[os.fsdecode(dest)] = {"wanted": os.fsdecode(wanted), "codec": settings["codec"],
                                      "settings": settings["key"]}
        item["rc_outputs"] = json.dumps(records, sort_keys=True)
        item["rc_codec"] = settings["codec"]
        item["rc_target"] = settings["target_mos"]
        item["rc_rung"] = res.rung_label
        item["rc_kbps"] = float(res.bitrate_kbps)
        item["rc_mos"] = round(float(res.pooled_mos), 3)
        item["rc_path"] = os.fsdecode(dest)
        item["rc_settings"] = settings["key"]
        item.store()
        ui.print_(f"{Path(os.fsdecode(dest)).name}: {res.rung_label} ({res.bitrate_kbps:g} kbps), "
                  f"MOS {res.pooled_mos:.2f}{'' if res.verified else ' (search estimate)'}")
        return "done"


def _norm(path) -> bytes:
    """One spelling of a path for comparisons (absolute, normalised, bytes)."""
    return os.path.normpath(os.path.abspath(os.fsencode(path)))


def _records(item) -> dict[str, dict]:
    """What rcconvert wrote for ``item``: output path -> {wanted, codec, settings}, one
    entry per destination (``rc_outputs``); an item from before it has only ``rc_path``."""
    try:
        records = json.loads(item.get("rc_outputs") or "{}")
    except ValueError:
        records = {}
    if not isinstance(records, dict):
        records = {}
    legacy = item.get("rc_path")
    if legacy and legacy not in records:
        records[legacy] = {"wanted": legacy, "codec": item.get("rc_codec"), "settings": item.get("rc_settings")}
    return records


def _candidates(before: list[bytes], wanted: bytes, base: bytes, ext: bytes):
    """The paths an item may be given: its earlier name for this destination, the wanted
    one, then ``base.1.ext``, ``base.2.ext``, ... (``util.unique_path``'s pattern)."""
    yield from before
    yield wanted
    k = 1
    while True:
        yield base + b"." + str(k).encode() + ext
        k += 1
