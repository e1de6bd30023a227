# nRF Connect SDK (sysbuild): use the devicetree partitions (boards/*.overlay) instead of the Partition Manager.
SB_CONFIG_PARTITION_MANAGER=n
