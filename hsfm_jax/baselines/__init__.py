"""Last-layer baselines on the same features as HSFM, each behind the method contract
(`hsfm_jax.methods`): ERM head, DFR, NeuronTune, GroupDRO, JTT, AFR. Heads are over raw features
(any standardization or masking is folded into the head), so the one evaluator scores every
method the same way. ERM (`erm.py`) is also the building block the others start from.
"""
