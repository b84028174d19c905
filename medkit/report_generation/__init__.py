"""Radiology report generation with counterfactual explanations: CoFE (arXiv 2407.14474).

Li et al., "Contrastive Learning with Counterfactual Explanations for Radiology
Report Generation", ECCV 2024. Modules:

- :mod:`.cofe_config` the dataclass config a pipeline YAML sets;
- :mod:`.data` studies from an R2Gen ``annotation.json`` (synthetic, IU-Xray, MIMIC-CXR);
- :mod:`.encoder` MONAI 2D image encoder + CheXpert diagnosis head;
- :mod:`.counterfactual` negatives and patch-swap counterfactual images (pure functions);
- :mod:`.embeddings` report embeddings (packaged MiniLM, or TF-IDF);
- :mod:`.losses` counterfactual InfoNCE, diagnosis BCE, report NLL;
- :mod:`.model` encoder + learnable prompt + causal LM, greedy/beam generation;
- :mod:`.train` ``medkit train report``; :mod:`.predict` ``medkit report``;
- :mod:`.baselines` nearest-neighbour report retrieval.

Heavy libraries (torch, transformers, MONAI) are imported inside those modules.
"""
