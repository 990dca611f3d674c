"""Optional connections to other tools: the Hugging Face Hub (:mod:`.hub`) and models saved
by pythae (:mod:`.pythae`). Each imports its third-party library only when used."""
