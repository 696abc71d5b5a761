"""What the command lines share: argument types, launcher arguments and logger (:mod:`.args`),
the probe tools' arguments and set-up (:mod:`.probes`)."""
