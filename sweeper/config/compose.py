"""A sweep's jobs composed once, exactly as Hydra's launchers compose them.

The pre-flight checks compose every job before the first starts (``checks.validate_grid``; a search's space in
``sweep.search``). They compose through the config loader the launchers use, with ``load_sweep_config``: the master
config's own Hydra overrides come first, so a ``hydra.searchpath`` or ``--config-dir`` the user gave counts as it
does for the launch itself (``hydra.compose`` would leave them out).

The loader then keeps what the check composed, and a launcher of this process (basic, joblib, submitit, population,
dry run) that asks for the same job takes that config instead of composing it a second time. Hydra's sweeper asks for
every job of a batch once before its launcher does (``Sweeper.validate_batch_is_legal``), so a grid's kept config
serves two requests: the first gets a copy (5 ms against 110 ms for a composition of task3c), the second the config
itself, which is then forgotten; a search trial's (``sweep.study.check_batch``) serves its launcher's one request.
Whoever gets one owns it (and may edit it, as Hydra's launchers do), and one more request for the same job composes
afresh. Nothing is kept across processes or sweeps.

A composition itself is Hydra's, split where its cost is: Hydra's ``load_sweep_config`` (110 ms for task3c) builds the
defaults list and merges every config file of it (95 ms of the 110), then applies the value overrides (``key=value``
of a key that is not a config group) to the merged config and fills ``hydra.runtime`` and ``hydra.job``. Jobs of one
sweep mostly differ only in value overrides (``trainer.seed=0,1,2``, ``model.width=...``), and the defaults list
depends only on the other overrides (config groups, ``hydra.*``): so the merge is done once per distinct set of those
(``_Template``) and each job takes a deep copy of it (17 ms) and runs Hydra's own remaining steps on it, in Hydra's
order (``ConfigLoaderImpl._load_configuration_impl`` of hydra-core 1.3, which this mirrors step by step).
``tests/sweeper/config/test_compose.py`` holds every kind of override against Hydra's own composition.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Sequence

from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf


class _Composed:
    """Wraps one config loader's ``load_sweep_config`` (on the instance: the class is Hydra's) with the kept jobs."""

    def __init__(self, loader: Any):
        self._loader = loader
        self._kept: dict[tuple, list] = {}  # key -> [config, requests it still serves]
        self._repos: dict[tuple, Any] = {}  # (config name, hydra overrides) -> Hydra's caching repository
        self._templates: dict[tuple, _Template] = {}  # + the group overrides -> the merged defaults list
        loader.load_sweep_config = self.load_sweep_config

    def _compose(self, master_config: Any, sweep_overrides: list[str]) -> Any:
        """Hydra's ``load_sweep_config``, with the defaults list merged once per template (module docstring)."""
        from hydra.errors import ConfigCompositionException
        from omegaconf.errors import OmegaConfBaseException

        try:
            cfg = self._load(master_config.hydra.job.config_name,
                             list(OmegaConf.to_container(master_config.hydra.overrides.hydra)) + sweep_overrides)
        except OmegaConfBaseException as exc:  # as Hydra's load_configuration
            raise ConfigCompositionException().with_traceback(exc.__traceback__) from exc
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def _repository(self, config_name: str | None, parsed: list) -> Any:
        """Hydra's caching repository for one composition, on the search path the overrides give."""
        from hydra._internal.config_repository import CachingConfigRepository

        repo = CachingConfigRepository(self._loader.repository)
        self._loader._process_config_searchpath(config_name, parsed, repo)
        return repo

    def _load(self, config_name: str | None, overrides: list[str]) -> Any:
        from hydra import __version__, version
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
        from hydra._internal.defaults_list import create_defaults_list
        from hydra.conf import ConfigSourceInfo
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.utils import JobRuntime
        from hydra.types import RunMode
        from omegaconf import open_dict

        loader = self._loader
        loader.ensure_main_config_source_available()
        parsed = OverridesParser.create().parse_overrides(overrides=overrides)
        hydra_lines = tuple(o.input_line for o in parsed if o.is_hydra_override())
        probe = self._repos.get((config_name, hydra_lines))
        if probe is None:  # which keys are groups, on the search path of the primary config and hydra.searchpath
            probe = self._repos[(config_name, hydra_lines)] = self._repository(config_name, parsed)
        loader.validate_sweep_overrides_legal(overrides=parsed, run_mode=RunMode.RUN, from_shell=True)
        sets = [_sets_a_value(o, probe) for o in parsed]
        values = [o for o, value in zip(parsed, sets) if value]  # what Hydra's defaults list calls config_overrides
        key = (config_name, tuple(o.input_line for o, value in zip(parsed, sets) if o.is_hydra_override() or not value))
        template = self._templates.get(key)
        if template is None:  # a repository of its own: a merge may write into the loaded configs it caches
            repo = self._repository(config_name, parsed)
            defaults_list = create_defaults_list(repo=repo, config_name=config_name, overrides_list=parsed,
                                                 prepend_hydra=True, skip_missing=False)
            template = _Template(loader._compose_config_from_defaults_list(defaults=defaults_list.defaults,
                                                                           repo=repo),
                                 dict(defaults_list.overrides.known_choices),
                                 [ConfigSourceInfo(path=x.path, schema=x.scheme(), provider=x.provider)
                                  for x in repo.get_sources()])
            self._templates[key] = template
        cfg = copy.deepcopy(template.config)
        # from here on, Hydra's own steps (ConfigLoaderImpl._load_configuration_impl), in its order
        OmegaConf.set_struct(cfg, True)
        OmegaConf.set_readonly(cfg.hydra, False)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        app_overrides = []
        for override in parsed:
            if override.is_hydra_override():
                cfg.hydra.overrides.hydra.append(override.input_line)
            else:
                cfg.hydra.overrides.task.append(override.input_line)
                app_overrides.append(override)
        with open_dict(cfg.hydra):
            cfg.hydra.runtime.choices.update(template.choices)
            for env in cfg.hydra.job.env_copy:
                cfg.hydra.job.env_set[env] = os.environ[env]
        cfg.hydra.runtime.version = __version__
        cfg.hydra.runtime.version_base = version.getbase()
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.runtime.config_sources = copy.deepcopy(template.sources)
        if "name" not in cfg.hydra.job:
            cfg.hydra.job.name = JobRuntime().get("name")
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app_overrides, kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
            item_sep=cfg.hydra.job.config.override_dirname.item_sep,
            exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys)
        cfg.hydra.job.config_name = config_name
        return cfg

    @staticmethod
    def _key(master_config: Any, overrides: Sequence[str]) -> tuple:
        return tuple(master_config.hydra.overrides.hydra), tuple(overrides)

    def load_sweep_config(self, master_config: Any, sweep_overrides: list[str]) -> Any:
        key = self._key(master_config, sweep_overrides)
        kept = self._kept.get(key)
        if kept is None:
            return self._compose(master_config, list(sweep_overrides))
        kept[1] -= 1
        if kept[1] > 0:
            cfg = copy.deepcopy(kept[0])
        else:
            del self._kept[key]
            cfg = kept[0]
        # As Hydra's own load_sweep_config does: the master's resolver cache, as it is now. The check composed before
        # the launcher resolved ${now:...} for the sweep dir; a job must resolve it to the same dir, not to its own time.
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def compose(self, master_config: Any, overrides: Sequence[str], requests: int) -> Any:
        """The job's config; kept for the next ``requests`` requests of the same job."""
        cfg = self._compose(master_config, list(overrides))
        self._kept[self._key(master_config, overrides)] = [cfg, requests]
        return cfg


@dataclass
class _Template:
    """The merged config of one defaults list, before any value override, and the group choices it made."""

    config: Any
    choices: dict
    sources: list  # hydra.runtime.config_sources


def _sets_a_value(override: Any, repo: Any) -> bool:
    """An override that Hydra's defaults list leaves to the config (``Overrides.config_overrides``): a dict value, or a
    key that is not a config group (sweep overrides are refused in a job before this is asked). A ``hydra.*`` one may
    be such a value too; it is still part of the template's key, as the search path it may set is."""
    if override.is_sweep_override():
        return False
    return isinstance(override.value(), dict) or not repo.group_exists(override.key_or_group)


def compose_job(master_config: Any, overrides: Sequence[str], keep: bool = True, requests: int = 2) -> Any:
    """One job of the sweep of ``master_config`` composed as its launcher will compose it, and (``keep``) kept for
    the next ``requests`` requests of that job: 2 for a grid's job (Hydra's sweeper asks for it once before its
    launcher does), 1 for a search trial's (the search sweeper does not ask); ``keep=False`` for a config no launcher
    will ask for (a search space's corner).

    Call it only from the launching process, after Hydra started (its global config loader is the launchers').
    """
    loader = GlobalHydra.instance().config_loader()
    composed = getattr(loader, "load_sweep_config", None)
    if not isinstance(getattr(composed, "__self__", None), _Composed):
        composed = _Composed(loader).load_sweep_config
    if not keep:
        return composed.__self__._compose(master_config, list(overrides))
    return composed.__self__.compose(master_config, overrides, requests)
