"""The app's config: its schema (``schema``), the checks run before any work (``checks``) and what identifies a run
(``identity``)."""
