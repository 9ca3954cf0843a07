#!/bin/sh
# keepalived `notify` hook for the fulcrum pair: logs every VRRP transition to the
# journal/syslog (tag fulcrum-vrrp). Install as /usr/local/sbin/fulcrum-vrrp-notify.sh,
# owned by root and not writable by others (enable_script_security requires it):
#   install -o root -g root -m 0755 fulcrum-vrrp-notify.sh /usr/local/sbin/
#
# keepalived calls it as:  SCRIPT TYPE NAME STATE PRIORITY
#   TYPE      INSTANCE or GROUP
#   NAME      the vrrp_instance name (fulcrum)
#   STATE     MASTER, BACKUP, FAULT or STOP
#   PRIORITY  the instance's priority
#
# It runs as script_user (keepalived_script), unprivileged: keep it to logging and
# notifications. Nothing here is needed for failover itself; fulcrum needs no
# signal when the address moves (its listeners bind 0.0.0.0, see README.md).

type=$1
name=$2
state=$3
priority=$4

case "$state" in
    MASTER) msg="now holds the virtual IP" ;;
    BACKUP) msg="standing by" ;;
    FAULT)  msg="fault: fulcrum not ready (/readyz) or interface down; virtual IP released" ;;
    STOP)   msg="keepalived stopping; virtual IP released" ;;
    *)      msg="state $state" ;;
esac

logger -t fulcrum-vrrp -- "$(hostname): $type $name $state (priority $priority): $msg"

# Add your own hooks below, for example a chat notification on MASTER or FAULT.
exit 0
