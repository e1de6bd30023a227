6. reads every resource variable (`MicroResourceVariables::Read`) and streams it with
   `tinyprop::SaveWeightsFrom` to the slot that does not hold the newest state (a power cut during the save leaves the
   previous state loadable). The next boot continues from there.
