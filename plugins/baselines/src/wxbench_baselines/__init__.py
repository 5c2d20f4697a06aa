"""wxbench baselines: persistence, climatology, lr and lr_multi."""
