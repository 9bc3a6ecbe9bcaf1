"""One run directory: where everything lives (`layout`) and the run read back (`run`)."""
