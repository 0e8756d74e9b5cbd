"""Sub-commands of ``avzsl``; each module registers one (see ``workflows.cli``)."""
