"""Trainers: thin, readable wrappers around TRL (SFT for HSFT and CoT SFT; DPO for Cross-DPO)."""
