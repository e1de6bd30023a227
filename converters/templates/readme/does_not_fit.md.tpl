
> **Warning: this model does not fit the board.** $verdict. Reduce the batch size or the widest sparse layer (the
> selection's [B, M, M] comparison tensors dominate the arena), or pick a board with more RAM.
