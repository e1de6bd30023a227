6. streams the state tensors to flash with `tinyprop::SaveWeightsFrom` (no RAM copy), to the slot that does not
   hold the newest state (a power cut during the save leaves the previous state loadable). The next boot continues
   from there.
