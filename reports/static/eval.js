(function(){
var q=document.getElementById('q'),cat=document.getElementById('cat'),st=document.getElementById('status'),
count=document.getElementById('count'),root=document.documentElement;
var items=[].map.call(document.querySelectorAll('article.sample'),function(a){return{el:a,t:a.textContent.toLowerCase(),
c:a.getAttribute('data-category'),s:a.getAttribute('data-status')}});
function match(t,terms){for(var i=0;i<terms.length;i++){if(t.indexOf(terms[i])<0)return false}return true}
function apply(){var terms=q.value.toLowerCase().split(/\s+/).filter(Boolean),c=cat.value,s=st.value,n=0;
items.forEach(function(it){var v=(!c||it.c===c)&&(!s||it.s===s)&&match(it.t,terms);it.el.hidden=!v;if(v)n++});
count.textContent=n+' of '+items.length+' samples shown';root.setAttribute('data-visible-samples',n);if(window.__reveal)window.__reveal()}
var timer;q.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(apply,60)});
cat.addEventListener('change',apply);st.addEventListener('change',apply);
document.addEventListener('keydown',function(e){if(e.key==='/'&&document.activeElement!==q){e.preventDefault();q.focus()}});
window.__selftest=function(p){q.value=p.selftest||'';cat.value=p.category||'';st.value=p.status||'';apply()};
apply();
})();
