"""The page where users make, list and revoke their API tokens (/accounts/tokens/), and the
same over the API (/api/v1/tokens/). The rules are in trialsite/tokens.py."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from trialsite import tokens
from trialsite.exceptions import TokenNeedsSession, TrialRuleError
from trialsite.forms import ApiTokenForm
from trialsite.models import ApiToken


@never_cache
@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm()
    new_key = None
    if request.method == "POST" and "revoke" in request.POST:
        token = tokens.token_of(request.user, request.POST.get("revoke"))
        tokens.token_revoke(token=token, revoked_by=request.user)
        messages.success(request, _("The token is revoked; it no longer works."))
        return redirect("api-tokens")
    if request.method == "POST":
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            try:
                _token, new_key = tokens.token_create(request=request, name=form.cleaned_data["name"])
            except TrialRuleError as error:
                form.add_error(None, error.message)
            else:
                form = ApiTokenForm()
    now = timezone.now()
    return render(
        request,
        "trialsite/api_tokens.html",
        {
            "form": form,
            "new_key": new_key,
            "tokens": [(token, tokens.is_live(token, now)) for token in tokens.tokens_of(request.user)[:50]],
            "hours": settings.API_TOKEN_HOURS,
        },
        status=400 if request.method == "POST" and not new_key else 200,
    )


class ApiTokenSerializer(serializers.ModelSerializer):
    last_used_at = serializers.DateTimeField(source="stored_key.last_used_at", read_only=True, allow_null=True)
    is_live = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ["id", "name", "created_at", "expires_at", "second_factor", "revoked_at", "last_used_at", "is_live"]
        read_only_fields = ["id", "created_at", "expires_at", "second_factor", "revoked_at"]

    def get_is_live(self, token) -> bool:
        return tokens.is_live(token)


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="Shown once; only its hash is stored.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]


class ApiTokenList(generics.ListAPIView):
    """Your API tokens; POST makes one (from a logged-in session only) and answers its key once."""

    serializer_class = ApiTokenSerializer

    def get_queryset(self):
        return tokens.tokens_of(self.request.user)

    @extend_schema(request=ApiTokenSerializer, responses={201: ApiTokenCreatedSerializer})
    def post(self, request):
        serializer = ApiTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, key = tokens.token_create(request=request, name=serializer.validated_data.get("name", ""))
        return Response(ApiTokenSerializer(token).data | {"key": key}, status=status.HTTP_201_CREATED)


class ApiTokenRevoke(APIView):
    @extend_schema(request=None, responses={200: ApiTokenSerializer})
    def delete(self, request, pk):
        if tokens.made_with_token(request):
            raise TokenNeedsSession()
        token = tokens.token_revoke(token=tokens.token_of(request.user, pk), revoked_by=request.user)
        return Response(ApiTokenSerializer(token).data)
