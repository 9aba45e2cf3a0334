# Django's dates for Chinese (2026年11月21日); numbers grouped in threes with a comma, as CLDR
# and Chinese hospital laboratory reports write them, where Django's own module leaves them bare.
from django.conf.locale.zh_Hans.formats import *  # noqa: F403

THOUSAND_SEPARATOR = ","
NUMBER_GROUPING = 3
