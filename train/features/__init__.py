"""Feature-memory families: a frozen pretrained backbone, and a memory of normal parts in its
feature space (`patchcore`: nearest neighbour over a coreset; `daad-f`: DAAD's block-wise memory)."""
