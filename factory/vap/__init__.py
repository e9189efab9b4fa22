"""The smoke-train: a small Voice Activity Projection model (Ekstedt & Skantze 2022) trained on an
export's audio tokens, scored on its held-out split against the majority class and the same model
trained with the agent channel shifted by 2 s. `data` (an export's token streams and the voice
activity of the run's timeline), `measures` (VAP targets, events, balanced accuracies, the verdict;
numpy only), `model` (the torch model and its training; torch environment), `smoke` (the whole
check, its report and plot)."""
