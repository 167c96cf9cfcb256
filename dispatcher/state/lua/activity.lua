-- What vendor_status reads: a running set per vendor (job id -> when it started)
-- and a hash per vendor and minute (requests, tokens). A job's id is the last part
-- of its hash's key. Entries a dead worker left behind drop out after a day.
local RUNNING_KEEP_S = 86400
local MINUTE_KEEP_S = 180
-- Each new latency moves a vendor's moving average a fifth of the way: about the
-- last ten calls count.
local LATENCY_EWMA_WEIGHT = 0.2
