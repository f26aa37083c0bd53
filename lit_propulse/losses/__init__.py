"""Loss terms, one small module each (the math lives here, not in the LightningModules)."""
