#!/bin/sh
# Stands in for the rabbitmq image's docker-entrypoint.sh, with Debian's RabbitMQ: the broker itself reads
# RABBITMQ_DEFAULT_USER and RABBITMQ_DEFAULT_PASS for the user it creates on a fresh node; the image's command is
# rabbitmq-server, run here as the script behind Debian's wrapper (the container already runs as rabbitmq).
set -eu
[ "$1" = rabbitmq-server ] && shift
exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
