"""The AI node (issue 13 item 5): ``slicewise listen`` (a Storage SCP) and ``slicewise watch`` (a QIDO-RS
poller) feed one durable queue; each series is analysed once when quiet and its result object is stored
back to the PACS, so every workstation reads the result from there. Qt-free."""
