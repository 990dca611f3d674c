"""Optional connections to other tools: the Hugging Face Hub (:mod:`.hub`), models saved
by pythae (:mod:`.pythae`) and experiment trackers (:mod:`.trackers`: TensorBoard, MLflow,
Weights & Biases). Each imports its third-party library only when used."""
