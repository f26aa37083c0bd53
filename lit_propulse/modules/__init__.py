"""LightningModules: thin wiring of injected networks, losses and optimizers (the stages of Pro-PULSE, PULSE, StyleGAN2, the attribute classifier)."""
