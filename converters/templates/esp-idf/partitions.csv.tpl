# Name,   Type, SubType, Offset, Size, Flags
# factory app: 1 MiB for code + the model ($model_bytes B) and samples, rounded to 64 KiB.
# tinyprop: the two slots of the training state ($state_bytes B payload, $slot_bytes B per slot).
nvs,      data, nvs,     ,       0x6000,
phy_init, data, phy,     ,       0x1000,
factory,  app,  factory, ,       $app_partition_hex,
tinyprop, data, 0x40,    ,       $state_partition_hex,
