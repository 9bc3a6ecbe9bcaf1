"""The ground floor: errors, path-safe names, atomic files, the run-directory lock, provenance.
Nothing here knows about models, data or experiments."""
