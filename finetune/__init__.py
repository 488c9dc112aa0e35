"""Fine-tuning the FaceReason reasoner: training data, SFT with LoRA, GRPO, rewards.

    finetune/data/      synthetic face timelines, adapters for public formats,
                        the conversation builder (HF datasets on disk)
    finetune/rewards.py reward functions for GRPO (also used by the evaluation)
    finetune/sft.py     TRL SFTTrainer + PEFT LoRA from a YAML config
    finetune/grpo.py    TRL GRPOTrainer from the SFT adapter
    finetune/evaluate.py the evaluation table (engine, base, SFT, SFT+GRPO)

docs/training.md walks through the recipe.
"""
